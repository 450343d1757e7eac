"""Gated nonlinearity: SiLU on scalars, sigmoid gates (computed from extra scalars) on l > 0."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
        gate_of = lay.channel_index[tail] - fiber[0]  # gate of every l > 0 position
        # gates -> positions as a product with a 0/1 matrix: its backward is a product too,
        # where a column gather's is a scatter (see _GraphAttention._expand_heads)
        expand = torch.zeros(self.num_gates, len(gate_of))
        expand[gate_of, torch.arange(len(gate_of))] = 1.0
        self.register_buffer("gate_expand", expand.to(torch.get_default_dtype()), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        c0, g = self.fiber[0], self.num_gates
        scalars, gates, rest = x.split([c0, g, x.shape[1] - c0 - g], dim=1)
        factors = torch.sigmoid(gates) @ self.gate_expand.to(gates.dtype)  # (R, F - C0)
        return torch.cat([F.silu(scalars), rest * factors], dim=-1)
