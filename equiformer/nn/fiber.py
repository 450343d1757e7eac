"""Features by degree: a *fiber* is the channel count of every degree ``0..L``.

Node and edge features travel between layers as a list ``x`` with ``x[l]`` of shape
``(N, 2l + 1, C_l)``: components on the middle axis (``m = -l..l``), channels last, so channel
mixing is a plain matrix product.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

Fiber = tuple[int, ...]
Features = list[Tensor]


def as_fiber(dims: int | Sequence[int], num_degrees: int, name: str) -> Fiber:
    """Broadcast an int to every degree, or check a per-degree tuple; names ``name`` on error."""
    if isinstance(dims, int):
        dims = (dims,) * num_degrees
    dims = tuple(int(d) for d in dims)
    if len(dims) != num_degrees:
        raise ValueError(f"{name} must give one value per degree ({num_degrees}), got {dims}")
    if any(d < 1 for d in dims):
        raise ValueError(f"{name} must be >= 1 for every degree, got {dims}")
    return dims


def feature_size(fiber: Fiber) -> int:
    """Length of the flattened feature vector: ``sum_l (2l + 1) C_l``."""
    return sum((2 * l + 1) * c for l, c in enumerate(fiber))


def flatten(x: Features) -> Tensor:
    """``[(N, 2l+1, C_l)] -> (N, sum_l (2l+1) C_l)``."""
    return torch.cat([t.reshape(t.shape[0], -1) for t in x], dim=-1)


def unflatten(flat: Tensor, fiber: Fiber) -> Features:
    """Inverse of ``flatten``."""
    sizes = [(2 * l + 1) * c for l, c in enumerate(fiber)]
    parts = flat.split(sizes, dim=-1)
    return [p.reshape(flat.shape[0], 2 * l + 1, c) for l, (p, c) in enumerate(zip(parts, fiber))]


def gather_nodes(x: Features, index: Tensor) -> Features:
    """Pick rows (nodes -> edges) of every degree."""
    return [t.index_select(0, index) for t in x]


def add(a: Features, b: Features) -> Features:
    return [s + t for s, t in zip(a, b)]
