"""Node-wise equivariant feed-forward: expand channels, gate, project back."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .activation import Gate
from .fiber import Fiber, gated_fiber, layout
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
        smooth_norm: bool = False,
    ):
        super().__init__()
        self.fiber = tuple(fiber)
        hidden = tuple(c * mult for c in fiber)
        self.include_htype_norms, self.eps = include_htype_norms, eps
        fiber_in = (fiber[0] + sum(fiber[1:]), *fiber[1:]) if include_htype_norms else self.fiber
        self.norm = EquivariantLayerNorm(fiber, smooth=smooth_norm)
        self.project_in = EquivariantLinear(fiber_in, gated_fiber(hidden))
        self.gate = Gate(hidden)
        self.project_out = EquivariantLinear(hidden, fiber_out or fiber, zero_init=zero_init_out)
        if include_htype_norms:
            lay = layout(self.fiber)
            self.register_buffer("norm_of", lay.channel_index[fiber[0] :] - fiber[0], persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        if self.include_htype_norms:
            c0 = self.fiber[0]
            scalars, rest = h.split([c0, h.shape[1] - c0], dim=1)
            sq = rest.new_zeros(rest.shape[0], sum(self.fiber[1:])).index_add(1, self.norm_of, rest * rest)
            h = torch.cat([scalars, torch.sqrt(sq + self.eps), rest], dim=-1)
        return self.project_out(self.gate(self.project_in(h)))
