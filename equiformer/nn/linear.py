"""Degree-wise channel mixing: the only linear maps that commute with rotations and need no edge."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .fiber import Fiber, layout, parameters_of


class EquivariantLinear(nn.Module):
    """``y_l = x_l @ W_l`` on flat features (plus a bias on degree 0, the one place a bias is
    equivariant).  Both fibers must have the same degrees."""

    def __init__(self, fiber_in: Fiber, fiber_out: Fiber, bias: bool = True, zero_init: bool = False):
        super().__init__()
        if len(fiber_in) != len(fiber_out):
            raise ValueError(f"fibers must have the same degrees, got {fiber_in} -> {fiber_out}")
        self.fiber_in, self.fiber_out = tuple(fiber_in), tuple(fiber_out)
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(ci, co) / math.sqrt(ci)) for ci, co in zip(fiber_in, fiber_out)
        )
        self.bias = nn.Parameter(torch.zeros(fiber_out[0])) if bias else None
        if zero_init:
            for w in self.weights:
                nn.init.zeros_(w)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, F_in) -> (N, F_out)``."""
        n = x.shape[0]
        degrees = layout(self.fiber_in).split(x)
        weights = parameters_of(self.weights)
        scalars = degrees[0][:, 0]
        if self.bias is not None:
            parts = [torch.addmm(self.bias, scalars, weights[0])]
        else:
            parts = [scalars @ weights[0]]
        for xl, w in zip(degrees[1:], weights[1:]):
            parts.append((xl @ w).reshape(n, xl.shape[1] * w.shape[1]))  # (N, (2l+1) C_out)
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]
