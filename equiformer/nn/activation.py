"""Gated nonlinearity: SiLU on scalars, sigmoid gates (computed from extra scalars) on l > 0."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .edge_layout import EdgeLayout
from .expand import ColumnExpansion
from .fiber import Fiber, gated_fiber, layout

__all__ = ["Gate", "gated_fiber"]


class Gate(nn.Module):
    """Flat ``gated_fiber(fiber) -> fiber``.  Directions are kept and only rescaled by invariant
    factors, so it commutes with rotations and reflections and works in any frame: on node
    features (degree-major) by default, on edge features in ``edge_layout``'s layout if given.
    Either way the scalars and gates come first, the ``l > 0`` features after them."""

    def __init__(self, fiber: Fiber, edge_layout: EdgeLayout | None = None):
        super().__init__()
        self.fiber = tuple(fiber)
        self.num_gates = sum(fiber[1:])
        lay = layout(self.fiber)
        positions = edge_layout.positions(self.fiber) if edge_layout is not None else torch.arange(lay.size, device="cpu")
        tail = positions[fiber[0] :]  # degree-major positions of the l > 0 slots
        self.expand = ColumnExpansion(lay.channel_index[tail] - fiber[0], self.num_gates)  # gate of every l > 0 position

    def forward(self, x: Tensor) -> Tensor:
        c0, g = self.fiber[0], self.num_gates
        scalars, gates, rest = x.split([c0, g, x.shape[1] - c0 - g], dim=1)
        # column views copied first: on CPU, copy + op on narrow column views is faster
        # forward+backward than the op on the strided view (benchmarks/RESULTS.md, "copy their
        # column views")
        factors = self.expand(torch.sigmoid(gates.contiguous()))  # (R, F - C0)
        return torch.cat([F.silu(scalars.contiguous()), rest * factors], dim=-1)
