"""Ids of nodes and of node pairs.

Nodes are named by padded-flat ids ``b * n + i`` in a padded batch ``(B, n)``, or by their
position in a packed batch; a pair of ids below ``size`` is one integer (``pair_key``), so sets of
pairs are sorted, searched and compared as plain integer tensors.
"""
from __future__ import annotations

import torch
from torch import Tensor


def pair_key(dst: Tensor, src: Tensor, size: int) -> Tensor:
    """One integer per (dst, src) pair of node ids below ``size``; sorts by receiver first."""
    return dst * size + src


def lookup_pairs(keys: Tensor, values: Tensor, dst: Tensor, src: Tensor, size: int) -> Tensor:
    """``values`` of the pairs ``(dst, src)`` in the sorted ``keys`` (see ``pair_key``); zeros for
    pairs that are not listed."""
    if keys.numel() == 0:
        return values.new_zeros(dst.shape[0], *values.shape[1:])
    query = pair_key(dst, src, size)
    pos = torch.searchsorted(keys, query).clamp(max=keys.numel() - 1)
    picked = values[pos]
    found = (keys[pos] == query).view(-1, *([1] * (picked.ndim - 1)))
    return torch.where(found, picked, torch.zeros_like(picked))


def exclusion_keys(exclude: tuple[Tensor, Tensor] | None, size: int) -> Tensor | None:
    """The excluded ``(dst, src)`` pairs as sorted ``pair_key``s, or None when there are none."""
    if exclude is None or exclude[0].numel() == 0:
        return None
    return torch.sort(pair_key(exclude[0], exclude[1], size))[0]


def positions_in_graphs(graph_index: Tensor) -> tuple[Tensor, Tensor]:
    """``graph_index`` ``(N,)`` -> (nodes per graph ``(B,)``, every node's position within its
    graph ``(N,)``, in node order)."""
    counts = torch.bincount(graph_index)
    order = torch.argsort(graph_index, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    position = torch.empty_like(graph_index)
    position[order] = torch.arange(order.numel(), device=graph_index.device) - starts[graph_index[order]]
    return counts, position


def no_edges(device: torch.device) -> tuple[Tensor, Tensor]:
    """An empty ``(dst, src)`` edge list."""
    empty = torch.zeros(0, dtype=torch.long, device=device)
    return empty, empty
