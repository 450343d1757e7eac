"""Checks at the public boundary of ``Equiformer``: constructor arguments and forward inputs.

Every error names the argument, what was expected and what was received.  ``TypeError`` for a
wrong Python type or tensor dtype, ``ValueError`` for a wrong shape, value, range or device.

Shape, dtype and device checks read only tensor metadata and cost nothing.  The checks that read
tensor *values* (coordinates finite, token ids in range) need a device-to-host sync; they run
while ``model.check_inputs`` is true (the default) and can be switched off for speed on a GPU,
``Equiformer(..., check_inputs=False)`` or ``model.check_inputs = False``.
"""
from __future__ import annotations

import math
import warnings
from numbers import Integral, Real
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from .nn.edge_geometry import TENSOR_PRODUCTS

_FLAGS = (
    "reduce_dim_out",
    "init_out_zero",
    "attend_self",
    "linear_out",
    "single_headed_kv",
    "ff_include_htype_norms",
    "l2_dist_attention",
    "reversible",
    "attend_sparse_neighbors",
    "gate_attn_head_outputs",
    "reflection_equivariance",
    "check_inputs",
)


# ---------------------------------------------------------------------------------- constructor
def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, (bool, np.bool_))


def _is_flag(value: Any) -> bool:
    """True/False, numpy booleans, or the integers 1/0 (equiformer-pytorch takes any truthy value;
    we take the unambiguous ones)."""
    return isinstance(value, (bool, np.bool_)) or (_is_int(value) and value in (0, 1))


def _is_real(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, (bool, np.bool_))


def plain_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A checked config in plain Python types (numpy numbers to int/float/bool; lists and tuples
    copied): loadable with ``torch.load(weights_only=True)`` and JSON, and not aliased to the
    caller's objects."""

    def plain(value: Any) -> Any:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, Integral):
            return int(value)
        if isinstance(value, Real):
            return float(value)
        if isinstance(value, (list, tuple)):
            return type(value)(plain(v) for v in value)
        return value

    return {name: bool(value) if name in _FLAGS else plain(value) for name, value in config.items()}


def _check_int(config: Mapping[str, Any], name: str, minimum: int, optional: bool = False) -> None:
    value = config[name]
    if optional and value is None:
        return
    if not _is_int(value):
        what = "None or an integer" if optional else "an integer"
        raise TypeError(f"{name} must be {what} >= {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_count(config: Mapping[str, Any], name: str) -> None:
    """A neighbour count: an integer >= 0 or ``inf`` (no limit)."""
    value = config[name]
    if not _is_real(value) or not (value == math.inf or float(value).is_integer()):
        raise TypeError(f"{name} must be an integer >= 0 or float('inf'), got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def _check_per_degree(config: Mapping[str, Any], name: str, count_name: str) -> None:
    """An int for every degree, or one positive int per degree (``config[count_name]`` of them)."""
    value, count = config[name], config[count_name]
    values = (value,) if _is_int(value) else value
    if not isinstance(values, Sequence) or isinstance(values, str) or not all(_is_int(v) for v in values):
        raise TypeError(f"{name} must be an int or a sequence of ints (one per degree), got {value!r}")
    if not _is_int(value) and len(values) != count:
        raise ValueError(f"{name} must give one value per degree ({count_name}={count}), got {len(values)}: {tuple(value)}")
    if any(v < 1 for v in values):
        raise ValueError(f"{name} must be >= 1 for every degree, got {value!r}")


def check_config(config: Mapping[str, Any]) -> None:
    """Refuse constructor arguments that are malformed or cannot work together.

    ``config``: the keyword arguments of ``Equiformer.__init__``, all of them."""
    for name in _FLAGS:
        if not _is_flag(config[name]):
            raise TypeError(f"{name} must be True or False (or 1 or 0), got {config[name]!r}")
    _check_int(config, "num_degrees", 1)
    _check_int(config, "input_degrees", 1)
    if config["input_degrees"] > config["num_degrees"]:
        raise ValueError(
            f"input_degrees must be <= num_degrees ({config['num_degrees']}), got {config['input_degrees']}"
        )
    for name in ("dim", "heads", "dim_head"):
        _check_per_degree(config, name, "num_degrees")
    if config["dim_in"] is not None:
        _check_per_degree(config, "dim_in", "input_degrees")
    _check_int(config, "depth", 0)
    for name in ("radial_hidden_dim", "linear_attn_dim_head", "attn_hidden_dim_mult", "ff_mult"):
        _check_int(config, name, 1)
    _check_int(config, "num_linear_attn_heads", 0)
    _check_int(config, "adj_dim", 0)
    _check_int(config, "num_radial_basis", 2)
    for name in ("num_tokens", "num_positions", "num_edge_tokens", "num_adj_degrees_embed"):
        _check_int(config, name, 1, optional=True)
    _check_int(config, "edge_dim", 0, optional=True)
    _check_int(config, "edge_chunk_size", 1, optional=True)
    _check_count(config, "num_neighbors")
    _check_count(config, "max_sparse_neighbors")

    radius = config["valid_radius"]
    if not _is_real(radius) or not radius > 0:  # NaN fails too
        raise ValueError(f"valid_radius must be a number > 0 (float('inf') for no cutoff), got {radius!r}")
    radial_max = config["radial_max_distance"]
    if radial_max is not None and (not _is_real(radial_max) or not 0 < radial_max < math.inf):
        raise ValueError(f"radial_max_distance must be None or a finite number > 0, got {radial_max!r}")
    frac = config["embedding_grad_frac"]
    if not _is_real(frac) or not 0.0 <= frac <= 1.0:
        raise ValueError(f"embedding_grad_frac must be a number in [0, 1], got {frac!r}")
    slope = config["attn_leakyrelu_slope"]
    if not _is_real(slope) or not math.isfinite(slope):
        raise ValueError(f"attn_leakyrelu_slope must be a finite number, got {slope!r}")
    if config["tensor_product"] not in TENSOR_PRODUCTS:
        raise ValueError(f"tensor_product must be one of {TENSOR_PRODUCTS}, got {config['tensor_product']!r}")

    # combinations
    if config["num_edge_tokens"] is not None and not config["edge_dim"]:
        raise ValueError(
            f"num_edge_tokens={config['num_edge_tokens']} needs edge_dim >= 1 (the width of the edge-token "
            f"embedding), got edge_dim={config['edge_dim']!r}"
        )
    if config["num_neighbors"] == 0 and not config["attend_sparse_neighbors"]:
        raise ValueError("num_neighbors=0 leaves nothing to attend to unless attend_sparse_neighbors=True")
    if config["num_neighbors"] == 0 and config["max_sparse_neighbors"] == 0:
        raise ValueError("num_neighbors=0 with max_sparse_neighbors=0 leaves nothing to attend to (no edges at all)")
    # keywords without effect in this combination: equiformer-pytorch ignores them silently, so a
    # config written for it must still build; we say so (stacklevel: check_config, __init__, user)
    if config["adj_dim"] > 0 and config["num_adj_degrees_embed"] is None:
        warnings.warn(
            f"adj_dim={config['adj_dim']} is ignored: it is the width of the hop-distance embedding, "
            "which needs num_adj_degrees_embed >= 1 (got None)",
            UserWarning,
            stacklevel=3,
        )
    if not config["linear_out"] and not config["reduce_dim_out"]:
        warnings.warn(
            "linear_out=False is ignored: it picks the output head of reduce_dim_out=True, and with "
            "reduce_dim_out=False there is no head",
            UserWarning,
            stacklevel=3,
        )


# ---------------------------------------------------------------------------------- forward
def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _model_reference(model) -> Tensor | None:
    """A floating parameter: the model's dtype and device."""
    return next((p for p in model.parameters() if p.is_floating_point()), None)


def _check_tensor(name: str, value: Any) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def _check_placement(name: str, t: Tensor, ref: Tensor | None, floating: bool) -> None:
    """Same device as the model; floating tensors also in the model's dtype."""
    if ref is None:
        return
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but the model is on {ref.device}: move one of them with .to(...)")
    if floating and t.dtype != ref.dtype:
        raise TypeError(
            f"{name} has dtype {t.dtype} but the model's parameters are {ref.dtype}: convert one of them with .to(...) "
            "(for mixed precision keep both in float32 and use torch.autocast)"
        )


def _is_integer(t: Tensor) -> bool:
    return not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)


def _check_floating(name: str, t: Tensor, what: str) -> None:
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor ({what}), got dtype {t.dtype}")


def _check_id_dtype(name: str, ids: Tensor, size_name: str, size: int) -> None:
    if not _is_integer(ids):
        raise TypeError(f"{name} must be an integer tensor of ids in [0, {size_name}={size}), got dtype {ids.dtype}")


def _check_id_values(name: str, ids: Tensor, size_name: str, size: int, real: Tensor | None = None) -> None:
    """Ids in ``[0, size)`` where ``real`` is True, if given (padding may hold any id, such as
    -1, since it is never read)."""
    used = ids if real is None else ids[real]
    if used.numel():
        low, high = int(used.min()), int(used.max())
        if low < 0 or high >= size:
            where = "" if real is None else " at real nodes"
            raise ValueError(f"{name} must be ids in [0, {size_name}={size}){where}, got values in [{low}, {high}]")


def check_features(
    model, inputs: Any, nodes: tuple[int, ...], names: str, largest_graph: int, mask: Tensor | None = None
) -> None:
    """``inputs`` of ``forward`` (``nodes = (b, n)``, ``names = "batch, nodes"``) or of
    ``forward_packed`` (``(N,)``, ``"nodes"``): token ids ``nodes``, features ``(*nodes, d0)`` (or
    ``(*nodes, d0, 1)``), or ``{l: (*nodes, d_l, 2l + 1)}`` for every input degree (degree 0 as
    token ids with num_tokens).  ``largest_graph``: nodes of the largest graph (num_positions).
    ``mask``: the checked ``(b, n)`` mask of ``forward``; token ids are only checked at real nodes."""
    ref = _model_reference(model)
    if isinstance(inputs, Mapping):
        keys = list(inputs)
        if not all(_is_int(k) for k in keys):
            raise TypeError(f"inputs dict keys must be the integer degrees 0..{model.input_degrees - 1}, got {keys!r}")
        expected = set(range(model.input_degrees))
        missing, extra = sorted(expected - set(keys)), sorted(set(keys) - expected)
        if missing or extra:
            raise ValueError(
                f"inputs must have exactly the degrees {sorted(expected)} (input_degrees={model.input_degrees}), "
                f"got {sorted(keys)}" + (f"; missing {missing}" if missing else "") + (f"; extra {extra}" if extra else "")
            )
        feats = {l: _check_tensor(f"inputs[{l}]", inputs[l]) for l in keys}
        name0 = "inputs[0]"
    elif isinstance(inputs, Tensor):
        if model.input_degrees > 1:
            raise TypeError(
                f"inputs must be a dict {{0: ..., ..., {model.input_degrees - 1}: ...}} with input_degrees="
                f"{model.input_degrees}, got a single tensor of shape {_shape(inputs)}"
            )
        feats, name0 = {0: inputs}, "inputs"
    else:
        raise TypeError(f"inputs must be a torch.Tensor or a dict of tensors by degree, got {type(inputs).__name__}")

    x0 = feats[0]
    if model.num_tokens:
        _check_placement(name0, x0, ref, floating=False)
        _check_id_dtype(name0, x0, "num_tokens", model.num_tokens)
        if _shape(x0) != nodes:
            raise ValueError(f"{name0} must be token ids of shape ({names}) = {nodes} like coors, got {_shape(x0)}")
        if model.check_inputs:
            _check_id_values(name0, x0, "num_tokens", model.num_tokens, real=mask)
    else:
        if not x0.is_floating_point():
            raise TypeError(
                f"{name0} has integer dtype {x0.dtype}: token ids need num_tokens in the constructor; "
                f"this model takes float features of shape ({names}, dim_in[0]) = {(*nodes, model.dim_in[0])}"
            )
        d0 = model.dim_in[0]
        if _shape(x0) not in ((*nodes, d0), (*nodes, d0, 1)):
            raise ValueError(
                f"{name0} must have shape ({names}, dim_in[0]) = {(*nodes, d0)} (nodes as in coors), got {_shape(x0)}"
            )
        _check_placement(name0, x0, ref, floating=True)
    for l in range(1, model.input_degrees):
        t = feats[l]
        expected = (*nodes, model.dim_in[l], 2 * l + 1)
        _check_floating(f"inputs[{l}]", t, f"degree-{l} features")
        if _shape(t) != expected:
            raise ValueError(
                f"inputs[{l}] must have shape ({names}, dim_in[{l}], 2l+1) = {expected}, got {_shape(t)}"
            )
        _check_placement(f"inputs[{l}]", t, ref, floating=True)
    if model.num_positions and largest_graph > model.num_positions:
        raise ValueError(f"a graph has {largest_graph} nodes but num_positions={model.num_positions} positions are embedded")


def _check_coors(coors: Any, ref: Tensor | None, ndim: int, shape: str) -> Tensor:
    """Floating ``coors`` with ``ndim`` dimensions, the last of size 3 (``shape``: for messages)."""
    coors = _check_tensor("coors", coors)
    _check_floating("coors", coors, "Cartesian positions")
    if coors.ndim != ndim or coors.shape[-1] != 3:
        raise ValueError(f"coors must have shape {shape}, got {_shape(coors)}")
    _check_placement("coors", coors, ref, floating=True)
    return coors


def check_packed(model, coors: Any, graph_index: Any) -> None:
    """``coors`` ``(N, 3)`` and ``graph_index`` ``(N,)`` non-negative integer graph ids, or None."""
    ref = _model_reference(model)
    coors = _check_coors(coors, ref, 2, "(nodes, 3) in forward_packed")
    if graph_index is not None:
        graph_index = _check_tensor("graph_index", graph_index)
        if not _is_integer(graph_index):
            raise TypeError(f"graph_index must hold integer graph ids, got dtype {graph_index.dtype}")
        if _shape(graph_index) != (coors.shape[0],):
            raise ValueError(f"graph_index must have shape (nodes,) = {(coors.shape[0],)} like coors, got {_shape(graph_index)}")
        _check_placement("graph_index", graph_index, ref, floating=False)
        if graph_index.numel() and int(graph_index.min()) < 0:
            raise ValueError("graph_index must hold non-negative integer graph ids")
    if model.check_inputs and not bool(torch.isfinite(coors).all()):
        raise ValueError("coors must be finite at every node, got NaN or inf (check_inputs=False skips this check)")


def check_pair_list(name: str, pairs: Any) -> Tensor:
    """An integer ``(2, P)`` tensor of node pairs (``forward_packed``'s sparse inputs)."""
    pairs = _check_tensor(name, pairs)
    if not _is_integer(pairs):
        raise TypeError(f"{name} must hold integer node ids, got dtype {pairs.dtype}")
    if pairs.ndim != 2 or pairs.shape[0] != 2:
        raise ValueError(f"{name} must have shape (2, P), got {_shape(pairs)}")
    return pairs


def check_packed_edges(model, edge_index: Any, edge_attr: Any) -> None:
    """``forward_packed``'s sparse edge inputs: ``edge_index`` ``(2, P)`` integer node pairs with
    ``edge_attr`` ``(P,)`` edge-token ids (``num_edge_tokens``) or ``(P, edge_dim)`` features;
    required exactly when the model has edge inputs (``edge_dim``)."""
    if edge_index is None:
        if model.edge_dim:
            kind = "(P,) edge-token ids" if model.edge_emb is not None else f"(P, edge_dim={model.edge_dim}) features"
            raise ValueError(f"edge_index (2, P) and edge_attr are required: this model has edge_dim={model.edge_dim}; edge_attr takes {kind}")
        if edge_attr is not None:
            raise ValueError("edge_attr was given without edge_index (2, P)")
        return
    if not model.edge_dim:
        raise ValueError("edge_index was given but this model has no edge inputs: construct it with edge_dim (and num_edge_tokens for ids)")
    ref = _model_reference(model)
    edge_index = check_pair_list("edge_index", edge_index)
    _check_placement("edge_index", edge_index, ref, floating=False)
    pairs = edge_index.shape[1]
    if edge_attr is None:
        raise ValueError(f"edge_attr is required with edge_index: one row per pair ({pairs})")
    edge_attr = _check_tensor("edge_attr", edge_attr)
    if model.edge_emb is not None:
        _check_id_dtype("edge_attr", edge_attr, "num_edge_tokens", model.edge_emb.num_embeddings)
        if model.check_inputs:
            _check_id_values("edge_attr", edge_attr, "num_edge_tokens", model.edge_emb.num_embeddings)
        if _shape(edge_attr) != (pairs,):
            raise ValueError(f"edge_attr must be edge-token ids of shape (P,) = {(pairs,)} like edge_index, got {_shape(edge_attr)}")
        _check_placement("edge_attr", edge_attr, ref, floating=False)
    else:
        _check_floating("edge_attr", edge_attr, "edge features, or construct the model with num_edge_tokens for ids")
        if _shape(edge_attr) != (pairs, model.edge_dim):
            raise ValueError(f"edge_attr must have shape (P, edge_dim) = {(pairs, model.edge_dim)}, got {_shape(edge_attr)}")
        _check_placement("edge_attr", edge_attr, ref, floating=True)


def warn_unused_adjacency(name: str, stacklevel: int) -> None:
    """An adjacency the model has no use for is ignored, as equiformer-pytorch ignores it, but
    said (once per call site under Python's default filter): the caller may expect bonds to
    count.  ``stacklevel``: frames up to the user's call."""
    warnings.warn(
        f"{name} is ignored: this model uses no adjacency; construct it with attend_sparse_neighbors=True "
        "and/or num_adj_degrees_embed to use it",
        UserWarning,
        stacklevel=stacklevel + 1,
    )


def check_forward(model, coors: Any, mask: Any, adj_mat: Any, edges: Any) -> None:
    """Everything ``forward`` takes except ``inputs`` (see ``check_features``)."""
    ref = _model_reference(model)
    coors = _check_coors(coors, ref, 3, "(batch, nodes, 3)")
    b, n, _ = coors.shape

    if mask is not None:
        mask = _check_tensor("mask", mask)
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor (True: real node), got dtype {mask.dtype}")
        if _shape(mask) != (b, n):
            raise ValueError(f"mask must have shape (batch, nodes) = {(b, n)} like coors, got {_shape(mask)}")
        _check_placement("mask", mask, ref, floating=False)

    needs_adjacency = model.attend_sparse_neighbors or model.num_adj_degrees_embed
    if adj_mat is not None:
        adj_mat = _check_tensor("adj_mat", adj_mat)
        if _shape(adj_mat) not in ((n, n), (b, n, n)):
            raise ValueError(f"adj_mat must have shape (nodes, nodes) = {(n, n)} or (batch, nodes, nodes) = {(b, n, n)}, got {_shape(adj_mat)}")
        _check_placement("adj_mat", adj_mat, ref, floating=False)
        # any nonzero entry is a neighbour: NaN would count as one, silently
        if model.check_inputs and adj_mat.is_floating_point() and bool(torch.isnan(adj_mat).any()):
            raise ValueError("adj_mat holds NaN: entries are neighbours where nonzero (use a bool tensor, or 0/1)")
        if not needs_adjacency:
            warn_unused_adjacency("adj_mat", stacklevel=5)  # check_forward < forward < Module.__call__ (2)
    elif needs_adjacency:
        raise ValueError(f"adj_mat {(n, n)} or {(b, n, n)} is required with attend_sparse_neighbors or num_adj_degrees_embed")

    if edges is not None:
        edges = _check_tensor("edges", edges)
        if not model.edge_dim:
            raise ValueError("edges were given but this model has no edge inputs: construct it with edge_dim (and num_edge_tokens for ids)")
        if model.edge_emb is not None:
            _check_placement("edges", edges, ref, floating=False)
            _check_id_dtype("edges", edges, "num_edge_tokens", model.edge_emb.num_embeddings)
            if _shape(edges) != (b, n, n):
                raise ValueError(f"edges must be edge-token ids of shape (batch, nodes, nodes) = {(b, n, n)}, got {_shape(edges)}")
            if model.check_inputs:
                real_pairs = None if mask is None else mask[:, :, None] & mask[:, None, :]
                _check_id_values("edges", edges, "num_edge_tokens", model.edge_emb.num_embeddings, real=real_pairs)
        else:
            _check_floating("edges", edges, "edge features, or construct the model with num_edge_tokens for ids")
            if _shape(edges) != (b, n, n, model.edge_dim):
                raise ValueError(f"edges must have shape (batch, nodes, nodes, edge_dim) = {(b, n, n, model.edge_dim)}, got {_shape(edges)}")
            _check_placement("edges", edges, ref, floating=True)
    elif model.edge_dim:
        raise ValueError(
            f"edges are required: this model has edge_dim={model.edge_dim}; pass edges={(b, n, n)} ids "
            f"(with num_edge_tokens) or {(b, n, n, model.edge_dim)} features"
        )

    if model.check_inputs:
        finite = torch.isfinite(coors).all(-1)
        if mask is not None:
            finite = finite | ~mask  # padding may hold anything (sidechainnet pads with NaN)
        if not bool(finite.all()):
            bi, i = (~finite).nonzero()[0].tolist()
            count = int((~finite).sum())
            raise ValueError(
                f"coors must be finite at every real (unmasked) node, got NaN or inf at {count} node(s), "
                f"first at [batch {bi}, node {i}] (check_inputs=False skips this check)"
            )


__all__ = ["TENSOR_PRODUCTS", "check_config", "check_features", "check_forward"]
