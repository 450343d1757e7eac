"""Equivariant normalisation: statistics that are invariant, so rescaling commutes with rotations."""
from __future__ import annotations

import torch
from torch import nn

from .fiber import Features, Fiber


class EquivariantLayerNorm(nn.Module):
    """Degree 0: ordinary LayerNorm over channels.  Degree l > 0: divide by the root mean square
    over components and channels (no centring: a mean vector is not rotation-invariant), then a
    learnt per-channel scale.  ``eps`` keeps all-zero features (isolated nodes) finite.
    """

    def __init__(self, fiber: Fiber, eps: float = 1e-6):
        super().__init__()
        self.fiber, self.eps = tuple(fiber), eps
        self.scalar_norm = nn.LayerNorm(fiber[0], eps=eps)
        self.scales = nn.ParameterList(nn.Parameter(torch.ones(c)) for c in fiber[1:])

    def forward(self, x: Features) -> Features:
        out = [self.scalar_norm(x[0])]
        for t, scale in zip(x[1:], self.scales):
            mean_sq = t.pow(2).mean(dim=(-2, -1), keepdim=True)  # (N, 1, 1)
            out.append(t * torch.rsqrt(mean_sq + self.eps) * scale)
        return out
