"""Node-wise equivariant feed-forward: expand channels, gate, project back."""
from __future__ import annotations

import torch
from torch import nn

from .activation import Gate, gated_fiber
from .fiber import Features, Fiber
from .linear import EquivariantLinear
from .norm import EquivariantLayerNorm


class FeedForward(nn.Module):
    """``fiber -> fiber_out`` through ``mult`` times wider gated hidden features.

    ``include_htype_norms``: the scalar input also sees the norm of every l > 0 channel, so higher
    degrees can gate each other.  The output projection starts at zero, so a residual block starts
    as the identity.
    """

    def __init__(
        self,
        fiber: Fiber,
        fiber_out: Fiber | None = None,
        mult: int = 4,
        include_htype_norms: bool = False,
        zero_init_out: bool = True,
        eps: float = 1e-8,
    ):
        super().__init__()
        hidden = tuple(c * mult for c in fiber)
        self.include_htype_norms, self.eps = include_htype_norms, eps
        fiber_in = (fiber[0] + sum(fiber[1:]), *fiber[1:]) if include_htype_norms else tuple(fiber)
        self.norm = EquivariantLayerNorm(fiber)
        self.project_in = EquivariantLinear(fiber_in, gated_fiber(hidden))
        self.gate = Gate(hidden)
        self.project_out = EquivariantLinear(hidden, fiber_out or fiber, zero_init=zero_init_out)

    def forward(self, x: Features) -> Features:
        h = self.norm(x)
        if self.include_htype_norms:
            norms = [torch.sqrt(t.pow(2).sum(dim=1, keepdim=True) + self.eps) for t in h[1:]]  # (N, 1, C_l)
            h = [torch.cat([h[0], *norms], dim=-1), *h[1:]]
        return self.project_out(self.gate(self.project_in(h)))
