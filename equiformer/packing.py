"""Packed graphs (nodes concatenated, with a graph index): positions within graphs and the
sparse pair lists of ``forward_packed``, all in packed node ids (nothing padded)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .graph import lookup_pairs, pair_key, positions_in_graphs
from .validation import check_pair_list


def graph_positions(graph_index: Tensor) -> tuple[int, Tensor, int]:
    """``(number of graphs, position of every node within its graph (N,), largest graph size)``;
    positions follow the node order within each graph."""
    if graph_index.numel() == 0:
        return 1, graph_index.new_zeros(0), 0
    counts, position = positions_in_graphs(graph_index)
    return counts.numel(), position, int(counts.max())


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


def sparse_edge_lookup(pairs: Tensor, values: Tensor | None, graph_index: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """A function giving the value of any (dst, src) node pair: the listed value, else 0."""
    _check_pairs(pairs, graph_index, "edge_index")
    if values is None or values.shape[0] != pairs.shape[1]:
        raise ValueError(f"edge_attr must have one row per edge_index pair ({pairs.shape[1]})")
    size = graph_index.numel()
    keys, order = torch.sort(pair_key(pairs[0], pairs[1], size))
    values = values[order]
    return lambda dst, src: lookup_pairs(keys, values, dst, src, size)
