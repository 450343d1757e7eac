"""Gated nonlinearity: SiLU on scalars, sigmoid gates (computed from extra scalars) on l > 0."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .expand import ColumnExpansion
from .fiber import Fiber, edge_positions, gated_fiber, layout

__all__ = ["Gate", "gated_fiber"]


class Gate(nn.Module):
    """Flat ``gated_fiber(fiber) -> fiber``.  Directions are kept and only rescaled by invariant
    factors, so it commutes with rotations and reflections and works in any frame
    (``order_major``: the edge-frame layout of the SO(2) path)."""

    def __init__(self, fiber: Fiber, order_major: bool = False):
        super().__init__()
        self.fiber = tuple(fiber)
        self.num_gates = sum(fiber[1:])
        lay = layout(self.fiber)
        tail = edge_positions(self.fiber, order_major)[fiber[0] :]
        self.expand = ColumnExpansion(lay.channel_index[tail] - fiber[0], self.num_gates)  # gate of every l > 0 position

    def forward(self, x: Tensor) -> Tensor:
        c0, g = self.fiber[0], self.num_gates
        scalars, gates, rest = x.split([c0, g, x.shape[1] - c0 - g], dim=1)
        # column views copied first: on CPU, copy + op is 1.2-2.2x faster forward+backward than the
        # op on a narrow strided view (4-8 of 40 columns), 0.8-0.9x on wider ones (16+ columns);
        # the whole readme-128 model gained 1.12x (ab_compare, 11 repeats)
        factors = self.expand(torch.sigmoid(gates.contiguous()))  # (R, F - C0)
        return torch.cat([F.silu(scalars.contiguous()), rest * factors], dim=-1)
