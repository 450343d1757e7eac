"""Distances to per-edge scalars: a Gaussian basis, a smooth cutoff envelope, and the radial MLP."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .exact_constants import ExactConstants


class GaussianBasis(ExactConstants):
    """``exp(-(d - mu_k)^2 / (2 sigma^2))`` with centres evenly spaced on ``[0, max_distance]``."""

    def __init__(self, num_basis: int, max_distance: float):
        super().__init__()
        if num_basis < 2 or not max_distance > 0:
            raise ValueError(f"need num_basis >= 2 and max_distance > 0, got {num_basis}, {max_distance}")
        self.register_constant("centers", torch.linspace(0.0, max_distance, num_basis, dtype=torch.float64, device="cpu"))
        self.width = max_distance / (num_basis - 1)

    def forward(self, dist: Tensor) -> Tensor:
        diff = (dist[..., None] - self.centers.to(dist.dtype)) / self.width  # (E, K)
        return torch.exp(-0.5 * diff * diff)


def polynomial_envelope(dist: Tensor, cutoff: float) -> Tensor:
    """Smooth step from 1 at ``d = 0`` to 0 at ``d = cutoff`` with two vanishing derivatives
    there (DimeNet's envelope with p = 5, ``1 - 21x^5 + 35x^6 - 15x^7``), so messages fade out
    instead of jumping as nodes cross the radius.  Evaluated in the factored form
    ``(1-x)^3 (1 + 3x + 6x^2 + 10x^3 + 15x^4)``, which keeps full relative precision next to the
    cutoff.  Infinite ``cutoff`` gives 1 everywhere."""
    if cutoff == float("inf"):
        return torch.ones_like(dist)
    x = (dist / cutoff).clamp(max=1.0)
    return (1 - x) ** 3 * (1 + x * (3 + x * (6 + x * (10 + 15 * x))))


class RadialTrunk(nn.Module):
    """Invariant edge scalars (distance basis, edge and hop embeddings) -> hidden edge features.

    Computed once per forward and shared by every layer; each convolution only adds its own
    linear head producing one factor per input (degree, channel).  Sharing the trunk removes
    most of the per-layer edge work of a full radial MLP per layer.
    """

    def __init__(self, dim_in: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim_in, hidden),
            nn.SiLU(),
            nn.LayerNorm(hidden),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.LayerNorm(hidden),
        )

    def forward(self, edge_scalars: Tensor) -> Tensor:
        return self.net(edge_scalars)
