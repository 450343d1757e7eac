"""Gated nonlinearity: SiLU on scalars, sigmoid gates (computed from extra scalars) on l > 0."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fiber import Features, Fiber


def gated_fiber(fiber: Fiber) -> Fiber:
    """The input fiber a ``Gate`` needs to produce ``fiber``: one extra scalar per l > 0 channel."""
    return (fiber[0] + sum(fiber[1:]), *fiber[1:])


class Gate(nn.Module):
    """``gated_fiber(fiber) -> fiber``.  Norm-preserving directions, so it commutes with rotations
    and reflections; the same op works in any frame (global or edge-aligned)."""

    def __init__(self, fiber: Fiber):
        super().__init__()
        self.fiber = tuple(fiber)
        self.split = [fiber[0], *fiber[1:]]

    def forward(self, x: Features) -> Features:
        scalars, *gates = x[0].split(self.split, dim=-1)
        out = [F.silu(scalars)]
        for t, g in zip(x[1:], gates):
            out.append(t * torch.sigmoid(g))  # g: (N, 1, C_l) broadcasts over components
        return out
