"""Checks at the public boundary of ``Equiformer``: forward inputs (the constructor arguments are
checked by ``equiformer.config.EquiformerConfig``).

Every error names the argument, what was expected and what was received.  ``TypeError`` for a
wrong Python type or tensor dtype, ``ValueError`` for a wrong shape, value, range or device.

Shape, dtype and device checks read only tensor metadata and cost nothing.  The checks that read
tensor *values* (coordinates finite, token ids in range) need a device-to-host sync; they run
while ``model.check_inputs`` is true (the default) and can be switched off for speed on a GPU,
``Equiformer(..., check_inputs=False)`` or ``model.check_inputs = False``.
"""
from __future__ import annotations

import warnings
from typing import Any, Mapping

import torch
from torch import Tensor

from .config import _is_int


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


__all__ = ["check_features", "check_forward"]
