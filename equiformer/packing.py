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
