"""Features by degree, stored flat.

A *fiber* is the channel count of every degree ``0..L``.  Node and edge features travel between
layers as one flat tensor ``(N, F)``, degree-major: degree ``l`` occupies a block of
``(2l + 1) * C_l`` numbers, components ``m = -l..l`` outer, channels inner, so
``x[:, block].view(N, 2l + 1, C_l)`` is a free view.  ``FiberLayout`` precomputes the index maps
that let layers act on all degrees with a handful of tensor ops instead of Python loops.
Features on edges may be kept in another order of the same numbers; ``edge_layout`` decides which.
"""
from __future__ import annotations

from numbers import Integral
from typing import Sequence

import torch
from torch import Tensor, nn

from ..so3.constants import outside_transforms

Fiber = tuple[int, ...]


def as_fiber(dims: int | Sequence[int], num_degrees: int, name: str) -> Fiber:
    """Broadcast an int to every degree, or check a per-degree tuple; names ``name`` on error."""
    if isinstance(dims, Integral):  # numpy integers too
        dims = (dims,) * num_degrees
    dims = tuple(int(d) for d in dims)
    if len(dims) != num_degrees:
        raise ValueError(f"{name} must give one value per degree ({num_degrees}), got {dims}")
    if any(d < 1 for d in dims):
        raise ValueError(f"{name} must be >= 1 for every degree, got {dims}")
    return dims


class FiberLayout:
    """Offsets and index maps of a fiber's flat layout (index tensors live on the CPU; modules
    copy the ones they need into non-persistent buffers)."""

    def __init__(self, fiber: Fiber):
        self.fiber = tuple(fiber)
        self.offsets = [0]
        for l, c in enumerate(fiber):
            self.offsets.append(self.offsets[-1] + (2 * l + 1) * c)
        self.size = self.offsets[-1]
        self.channel_offsets = [sum(fiber[:l]) for l in range(len(fiber) + 1)]
        channel, degree, order = [], [], []
        for l, c in enumerate(fiber):
            for m in range(-l, l + 1):
                channel.extend(range(self.channel_offsets[l], self.channel_offsets[l] + c))
                degree.extend([l] * c)
                order.extend([abs(m)] * c)
        self.channel_index = torch.tensor(channel, device="cpu")  # (F,) flat position -> (degree, channel) slot
        self.degree_index = torch.tensor(degree, device="cpu")  # (F,) flat position -> degree
        self.abs_order_index = torch.tensor(order, device="cpu")  # (F,) flat position -> |m|
        # runs of consecutive degrees >= 1 with equal channel counts: rotated with one bmm each
        self.rotation_groups: list[tuple[int, int]] = []
        for l in range(1, len(fiber)):
            if self.rotation_groups and fiber[self.rotation_groups[-1][1] - 1] == fiber[l]:
                self.rotation_groups[-1] = (self.rotation_groups[-1][0], l + 1)
            else:
                self.rotation_groups.append((l, l + 1))

        self.block_sizes = [(2 * l + 1) * c for l, c in enumerate(fiber)]
        # the order-major permutation: [m=0: all degrees | m=+1: l>=1 | m=-1: l>=1 | m=+2: l>=2 | ...]
        # (whether edge features use it is ``EdgeLayout``'s decision, see ``edge_layout``)
        order = []
        for m in range(len(fiber)):
            for sign in (1, -1) if m else (1,):
                for l in range(m, len(fiber)):
                    start = self.offsets[l] + (l + sign * m) * fiber[l]
                    order.extend(range(start, start + fiber[l]))
        self.order_index = torch.tensor(order, device="cpu")  # (F,) order-major slot -> degree-major position
        self.order_inverse = torch.argsort(self.order_index)  # degree-major position -> slot
        # the same permutation on the rows (l, m), l >= 1, of the rotation group (plain ints: it
        # only names the rows of a rotation matrix, see ``EdgeGeometry.rotate``)
        rows = [(l, m) for l in range(1, len(fiber)) for m in range(-l, l + 1)]
        order_rows = [(l, s * m) for m in range(len(fiber)) for s in ((1, -1) if m else (1,)) for l in range(max(m, 1), len(fiber))]
        self.row_order = tuple(rows.index(r) for r in order_rows)

    def order_count(self, mmax: int) -> int:
        """How many flat positions have order ``|m| <= mmax``: the length of the order-major
        prefix that keeps those orders."""
        return sum((2 * min(l, mmax) + 1) * c for l, c in enumerate(self.fiber))

    def rows_up_to_order(self, start: int, stop: int, mmax: int) -> tuple[int, ...]:
        """The rows (l, m) of degrees ``start..stop-1`` with ``|m| <= mmax``, as indices into
        those degrees' stacked ``2l+1`` rows (degree-major order)."""
        rows, first = [], 0
        for l in range(start, stop):
            rows.extend(first + l + m for m in range(-min(l, mmax), min(l, mmax) + 1))
            first += 2 * l + 1
        return tuple(rows)

    def split(self, x: Tensor) -> list[Tensor]:
        """Every degree as a ``(N, 2l+1, C_l)`` view.  ``torch.split`` rather than slicing: its
        backward is one concatenation instead of a zero-filled full-size tensor per slice."""
        return [t.view(x.shape[0], 2 * l + 1, c) for l, (t, c) in enumerate(zip(x.split(self.block_sizes, dim=1), self.fiber))]

    def merge(self, parts: Sequence[Tensor]) -> Tensor:
        """Inverse of ``split``: per-degree ``(N, 2l+1, C_l)`` tensors to one flat tensor."""
        return torch.cat([p.reshape(p.shape[0], p.shape[1] * p.shape[2]) for p in parts], dim=-1)


_LAYOUTS: dict[Fiber, FiberLayout] = {}


def layout(fiber: Fiber) -> FiberLayout:
    """The (memoised) layout of a fiber.  A plain dict rather than ``functools.lru_cache``:
    ``torch.compile`` traces through it without warnings about cache wrappers."""
    fiber = tuple(fiber)
    if fiber not in _LAYOUTS:
        with outside_transforms():  # kept for every later call, so plain tensors only
            _LAYOUTS[fiber] = FiberLayout(fiber)
    return _LAYOUTS[fiber]


def gated_fiber(fiber: Fiber) -> Fiber:
    """The fiber a ``Gate`` takes to produce ``fiber``: one extra scalar per l > 0 channel."""
    return (fiber[0] + sum(fiber[1:]), *fiber[1:])


def parameters_of(plist: nn.ParameterList) -> list[nn.Parameter]:
    """The parameters of a ``ParameterList`` as a plain list.  Indexing or slicing the list
    itself goes through ``Module`` attribute machinery, whose per-call cost adds up on hot paths
    called thousands of times per step."""
    return list(plist._parameters.values())
