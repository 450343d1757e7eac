"""Packed graphs (nodes concatenated, with a graph index): the sparse pair lists of
``forward_packed``, in packed node ids (nothing padded)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .graph import lookup_pairs, pair_key
from .validation import check_pair_list


def _check_pairs(pairs: Tensor, graph_index: Tensor, name: str) -> Tensor:
    """Checked pairs as int64 (any integer dtype is accepted; uint8 would index as a mask)."""
    pairs = check_pair_list(name, pairs).long()
    if pairs.numel() and (pairs.min() < 0 or pairs.max() >= graph_index.numel()):
        raise ValueError(f"{name} refers to nodes outside 0..{graph_index.numel() - 1}")
    if pairs.numel() and (graph_index[pairs[0]] != graph_index[pairs[1]]).any():
        raise ValueError(f"{name} links nodes of different graphs")
    return pairs


def sparse_pairs(pairs: Tensor, graph_index: Tensor) -> tuple[Tensor, Tensor]:
    """Node pairs ``(2, P)`` -> ``(dst, src)`` sorted by receiver, self pairs dropped and each
    pair once: the set of true entries of a dense ``adj_mat``, in the order it lists them."""
    pairs = _check_pairs(pairs, graph_index, "adjacency")
    size = graph_index.numel()
    keys = torch.unique(pair_key(pairs[0], pairs[1], size))  # sorted, duplicates merged
    dst, src = keys // size, keys % size
    keep = dst != src
    return dst[keep], src[keep]


def sparse_edge_lookup(pairs: Tensor, values: Tensor, graph_index: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """A function giving the value of any (dst, src) node pair: the listed value, else 0.
    ``values``: one row per pair (checked by ``validation.check_packed_edges``)."""
    pairs = _check_pairs(pairs, graph_index, "edge_index")
    size = graph_index.numel()
    keys, order = torch.sort(pair_key(pairs[0], pairs[1], size))
    repeated = (keys[1:] == keys[:-1]).nonzero()
    if repeated.numel():  # which value would win is arbitrary: refuse rather than guess
        first = int(keys[int(repeated[0])])
        raise ValueError(f"edge_index lists the pair ({first // size}, {first % size}) more than once; give each pair one edge_attr row")
    values = values[order]
    return lambda dst, src: lookup_pairs(keys, values, dst, src, size)


def checked_neighbors(
    neighbors: Tensor | None, shifts: Tensor | None, coors: Tensor, graph_index: Tensor, check_values: bool = True
) -> tuple[Tensor, Tensor | None]:
    """``forward_packed``'s graph from outside: ``neighbors`` ``(2, E)`` integer pairs ``(i, j)``
    ("``i`` receives from ``j``") within one graph each, ``shifts`` ``(E, 3)`` image offsets (or
    None).  Returns them as int64 pairs and ``coors``-typed shifts.  ``check_values``: also refuse
    NaN or infinite shifts (a host sync, like the model's other value checks)."""
    if neighbors is None:
        raise ValueError("shifts were given without neighbors: pass neighbors (2, E) with shifts (E, 3)")
    pairs = _check_pairs(neighbors, graph_index, "neighbors")
    if pairs.device != coors.device:
        raise ValueError(f"neighbors must be on the device of coors ({coors.device}), got {pairs.device}")
    edges = pairs.shape[1]
    if shifts is not None:
        if not isinstance(shifts, Tensor):
            raise TypeError(f"shifts must be a tensor (E, 3), got {type(shifts).__name__}")
        if shifts.dtype != coors.dtype:
            raise TypeError(f"shifts must have the dtype of coors ({coors.dtype}), got {shifts.dtype}")
        if tuple(shifts.shape) != (edges, 3):
            raise ValueError(f"shifts must have shape (E, 3) = {(edges, 3)}, one row per neighbors pair, got {tuple(shifts.shape)}")
        if shifts.device != coors.device:
            raise ValueError(f"shifts must be on the device of coors ({coors.device}), got {shifts.device}")
        if check_values and not bool(torch.isfinite(shifts).all()):
            raise ValueError("shifts must be finite, got NaN or inf (check_inputs=False skips this check)")
    loops = pairs[0] == pairs[1]
    if shifts is not None:
        loops = loops & (shifts == 0).all(-1)
    if bool(loops.any()):
        e = int(loops.nonzero()[0])
        raise ValueError(
            f"neighbors pairs node {int(pairs[0, e])} with itself (edge {e}) without a shift: an edge to oneself "
            "has no direction; give it a nonzero shift (a periodic image) or leave it out"
        )
    return pairs, shifts
