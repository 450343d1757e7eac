"""Between packed graphs (nodes concatenated, with a graph index) and padded batches.

The network itself always runs on packed nodes; the padded layout serves the neighbour search
and the input checks and embeddings that ``forward_packed`` shares with ``forward``.  These
helpers give every packed node a slot ``b * n_max + position`` in that layout and translate
sparse pair lists into it.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .graph import lookup_pairs, pair_key


def padded_slots(graph_index: Tensor) -> tuple[Tensor, int, int]:
    """``(slot of every node, number of graphs, largest graph size)``; order within a graph kept."""
    if graph_index.numel() == 0:
        return graph_index.new_zeros(0), 1, 1
    if graph_index.dtype.is_floating_point or graph_index.min() < 0:
        raise ValueError("graph_index must hold non-negative integer graph ids")
    num_graphs = int(graph_index.max()) + 1
    counts = torch.bincount(graph_index, minlength=num_graphs)
    order = torch.argsort(graph_index, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    position = torch.empty_like(graph_index)
    position[order] = torch.arange(graph_index.numel(), device=graph_index.device) - starts[graph_index[order]]
    max_nodes = int(counts.max())
    return graph_index * max_nodes + position, num_graphs, max_nodes


def _check_pairs(pairs: Tensor, graph_index: Tensor, name: str) -> None:
    if pairs.ndim != 2 or pairs.shape[0] != 2:
        raise ValueError(f"{name} must have shape (2, P), got {tuple(pairs.shape)}")
    if pairs.numel() and (pairs.min() < 0 or pairs.max() >= graph_index.numel()):
        raise ValueError(f"{name} refers to nodes outside 0..{graph_index.numel() - 1}")
    if pairs.numel() and (graph_index[pairs[0]] != graph_index[pairs[1]]).any():
        raise ValueError(f"{name} links nodes of different graphs")


def sparse_pairs(pairs: Tensor, slots: Tensor, graph_index: Tensor) -> tuple[Tensor, Tensor]:
    """Node pairs ``(2, P)`` -> padded-slot ``(dst, src)``, self pairs dropped."""
    _check_pairs(pairs, graph_index, "adjacency")
    keep = pairs[0] != pairs[1]
    return slots[pairs[0][keep]], slots[pairs[1][keep]]


def sparse_edge_lookup(
    pairs: Tensor, values: Tensor | None, slots: Tensor, graph_index: Tensor, size: int
) -> Callable[[Tensor, Tensor], Tensor]:
    """A function giving the value of any (dst, src) slot pair: the listed value, else 0."""
    _check_pairs(pairs, graph_index, "edge_index")
    if values is None or values.shape[0] != pairs.shape[1]:
        raise ValueError(f"edge_attr must have one row per edge_index pair ({pairs.shape[1]})")
    keys, order = torch.sort(pair_key(slots[pairs[0]], slots[pairs[1]], size))
    values = values[order]
    return lambda dst, src: lookup_pairs(keys, values, dst, src, size)
