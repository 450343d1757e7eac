"""The rotation that turns an edge direction onto the reference axis.

The reference axis is ``+y``, the polar axis of our spherical harmonics: in the rotated frame an
edge's harmonics are non-zero only at ``m = 0``, which is what makes the SO(2) convolution work.

A continuous choice over the whole sphere is impossible (hairy-ball theorem), so two smooth
charts are glued: directions with ``y >= 0`` take the shortest rotation onto ``+y``; the others
take the shortest rotation onto ``-y`` followed by a fixed half-turn about ``x``.  Each chart is a
rational function whose denominator is at least 1, so the result is deterministic, accurate to
rounding at and near both poles, and has finite gradients everywhere.  The roll about the axis
is arbitrary but fixed; layers built on this frame are invariant to it.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .spherical_harmonics import safe_unit

EDGE_AXIS = (0.0, 1.0, 0.0)


def edge_to_axis_rotation(vectors: Tensor) -> Tensor:
    """Rotation matrices ``R`` of shape ``(..., 3, 3)`` with ``R @ (v / |v|) = +y``.

    Zero vectors (``|v|^2`` underflowing to 0 included) get the identity (their direction is undefined; layers treat them apart).
    """
    if vectors.shape[-1:] != (3,):
        raise ValueError(f"vectors must have shape (..., 3), got {tuple(vectors.shape)}")
    u, nonzero = safe_unit(vectors)
    ux, uy, uz = u.unbind(-1)
    north = uy >= 0
    # Fold the southern hemisphere onto the northern one: the half-turn about x, F = diag(1,-1,-1),
    # maps -y to +y, so R = F @ R' where R' takes u onto -y.  Writing s = +-1, both charts are
    # R = S @ rodrigues(u -> s y) with c = s * uy >= 0.
    s = torch.where(north, torch.ones_like(uy), -torch.ones_like(uy))
    c = s * uy  # cosine between u and the chart's target, in [0, 1]
    # v = u x (s y) = s * (-uz, 0, ux)
    vx, vz = -s * uz, s * ux
    k = 1.0 / (1.0 + c)  # in [1/2, 1]
    # Rodrigues: R' = c I + [v]_x + v v^T / (1 + c), with v_y = 0
    r = torch.stack(
        [
            torch.stack([c + k * vx * vx, -vz, k * vx * vz], -1),
            torch.stack([vz, c, -vx], -1),
            torch.stack([k * vx * vz, vx, c + k * vz * vz], -1),
        ],
        dim=-2,
    )  # (..., 3, 3)
    flip = torch.stack([torch.ones_like(s), s, s], -1).unsqueeze(-1)  # rows of diag(1, s, s)
    r = flip * r
    eye = torch.eye(3, dtype=vectors.dtype, device=vectors.device).expand_as(r)
    return torch.where(nonzero[..., None, None], r, eye)
