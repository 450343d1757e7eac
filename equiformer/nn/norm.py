"""Equivariant normalisation: statistics that are invariant, so rescaling commutes with rotations."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .exact_constants import ExactConstants
from .fiber import Fiber, layout


class EquivariantLayerNorm(ExactConstants):
    """Degree 0: LayerNorm over channels.  Degree l > 0: divide by the root mean square over its
    components and channels (no centring: a mean vector is not rotation-invariant), then a learnt
    per-channel scale.  ``eps`` keeps all-zero features (isolated nodes) finite.

    With the default ``eps`` features far below ``sqrt(eps)`` are scaled up to ``1/sqrt(eps)``,
    which undoes the cutoff envelope's fade for nodes whose only directional input comes from
    neighbours at the edge of ``valid_radius``.  ``smooth``: degree l > 0 is divided by
    ``sqrt(mean square + 1)`` instead, a gain of at most 1 with a bounded derivative, so nothing
    small is ever amplified (large features are still normalised)."""

    def __init__(self, fiber: Fiber, eps: float = 1e-6, smooth: bool = False):
        super().__init__()
        self.fiber, self.eps = tuple(fiber), eps
        self.vector_eps = 1.0 if smooth else eps  # added to the l > 0 mean squares
        device = torch.get_default_device()  # parameters: where nn.LayerNorm would put them
        self.scalar_weight = nn.Parameter(torch.ones(fiber[0], device=device))
        self.scalar_bias = nn.Parameter(torch.zeros(fiber[0], device=device))
        self.scales = nn.Parameter(torch.ones(sum(fiber[1:]), device=device))  # one per l > 0 channel
        lay = layout(self.fiber)
        c0 = fiber[0]
        degree = lay.degree_index[c0:] - 1  # (F - C0,) degree - 1 of every higher position
        where = degree.device  # constants: beside the layout's index tensors (on the CPU)
        counts = torch.tensor([(2 * l + 1) * c for l, c in enumerate(fiber)][1:], dtype=torch.float64, device=where)
        mean = torch.zeros(lay.size - c0, max(len(fiber) - 1, 1), dtype=torch.float64, device=where)
        mean[torch.arange(lay.size - c0, device=where), degree] = 1.0 / counts[degree]
        self.register_constant("mean_matrix", mean)
        self.register_buffer("degree_of", degree, persistent=False)
        self.register_buffer("scale_of", lay.channel_index[c0:] - c0, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        c0 = self.fiber[0]
        if len(self.fiber) == 1:
            return F.layer_norm(x, (c0,), self.scalar_weight, self.scalar_bias, self.eps)
        scalars, rest = x.split([c0, x.shape[1] - c0], dim=1)  # rest: (N, F - C0)
        scalars = F.layer_norm(scalars, (c0,), self.scalar_weight, self.scalar_bias, self.eps)
        # statistics in at least float32, also under autocast: rsqrt of small half-precision
        # numbers overflows in the backward pass
        work = torch.promote_types(rest.dtype, torch.float32)
        with torch.autocast(x.device.type, enabled=False):
            r = rest.to(work)
            mean_sq = (r * r) @ self.mean_matrix.to(work)  # (N, L) per-degree mean square
            factor = torch.rsqrt(mean_sq + self.vector_eps).index_select(1, self.degree_of)
            rest = r * factor * self.scales.to(work).index_select(0, self.scale_of)
        return torch.cat([scalars.to(x.dtype), rest.to(x.dtype)], dim=-1)
