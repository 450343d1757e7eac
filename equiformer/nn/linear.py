"""Degree-wise channel mixing: the only linear maps that commute with rotations and need no edge."""
from __future__ import annotations

import math

import torch
from torch import nn

from .fiber import Features, Fiber


class EquivariantLinear(nn.Module):
    """``y[l] = x[l] @ W_l`` (plus a bias on degree 0 only, the one place a bias is equivariant).

    Degrees of ``fiber_out`` beyond ``fiber_in`` would be constant zero, so both fibers must have
    the same number of degrees.
    """

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

    def forward(self, x: Features) -> Features:
        out = [t @ w for t, w in zip(x, self.weights)]  # (N, 2l+1, C_out)
        if self.bias is not None:
            out[0] = out[0] + self.bias
        return out
