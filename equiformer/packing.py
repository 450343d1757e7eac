"""Packed graphs (nodes concatenated, with a graph index): the sparse pair lists of
``forward_packed``, in packed node ids (nothing padded)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .graph import lookup_pairs, pair_key
from .validation import check_pair_list


def _check_pairs(pairs: Tensor, graph_index: Tensor, name: str) -> None:
    check_pair_list(name, pairs)
    if pairs.numel() and (pairs.min() < 0 or pairs.max() >= graph_index.numel()):
        raise ValueError(f"{name} refers to nodes outside 0..{graph_index.numel() - 1}")
    if pairs.numel() and (graph_index[pairs[0]] != graph_index[pairs[1]]).any():
        raise ValueError(f"{name} links nodes of different graphs")


def sparse_pairs(pairs: Tensor, graph_index: Tensor) -> tuple[Tensor, Tensor]:
    """Node pairs ``(2, P)`` -> ``(dst, src)``, self pairs dropped."""
    _check_pairs(pairs, graph_index, "adjacency")
    keep = pairs[0] != pairs[1]
    return pairs[0][keep], pairs[1][keep]


def sparse_edge_lookup(pairs: Tensor, values: Tensor, graph_index: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """A function giving the value of any (dst, src) node pair: the listed value, else 0.
    ``values``: one row per pair (checked by ``validation.check_packed_edges``)."""
    _check_pairs(pairs, graph_index, "edge_index")
    size = graph_index.numel()
    keys, order = torch.sort(pair_key(pairs[0], pairs[1], size))
    values = values[order]
    return lambda dst, src: lookup_pairs(keys, values, dst, src, size)
