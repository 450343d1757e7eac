"""The distance formula and the nearest-first selections that every search shares.

The grid and the exhaustive search must give the same edges, so they compute distances with one
formula and break ties by one rule; both live here.
"""
from __future__ import annotations

import torch
from torch import Tensor


def pairwise_distances(a: Tensor, b: Tensor) -> Tensor:
    """Distances as every search here computes them: one formula (``cdist`` without the matrix
    product trick), so that the searches rank ties and radius edges to the same last bit
    (``vector_norm`` differs from it in the last bit for some float64 pairs)."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def pair_distances(points: Tensor, dst: Tensor, src: Tensor) -> Tensor:
    """``(E,)`` distances of the pairs ``points[dst]``, ``points[src]``, by ``pairwise_distances``."""
    return pairwise_distances(points[dst][:, None, :], points[src][:, None, :]).view(-1)


def k_nearest(dist: Tensor, k: int, ids: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``topk(k, largest=False)`` along the last dimension, except that among candidates tied
    at the k-th distance the lowest ``ids`` win (default: the column index), so the chosen set
    does not depend on the row's length, padding or candidate order.  ``ids``: same shape as
    ``dist``.  Returns (values, slots), nearest first.

    Only rows with a tie across the k-th place (rare off lattices) are sorted in full."""
    width = dist.shape[-1]
    if k == 0 or k >= width:
        return dist.topk(min(k, width), dim=-1, largest=False)
    more, slot = dist.topk(k + 1, dim=-1, largest=False)  # one more, to see a tie at the boundary
    values, slot = more[..., :k].contiguous(), slot[..., :k].contiguous()
    tied = (more[..., k - 1] == more[..., k]) & torch.isfinite(more[..., k])
    if bool(tied.any()):
        rows = tied.nonzero(as_tuple=True)
        row_dist = dist[rows]  # (T, width)
        by_id = torch.argsort(ids[rows], dim=-1, stable=True) if ids is not None else None
        keyed = row_dist if by_id is None else row_dist.gather(-1, by_id)
        best = torch.argsort(keyed, dim=-1, stable=True)[..., :k]  # nearest, lowest id first on ties
        best = best if by_id is None else by_id.gather(-1, best)
        values[rows], slot[rows] = row_dist.gather(-1, best), best
    return values, slot


def best_per_receiver(dst: Tensor, score: Tensor, k: float) -> Tensor:
    """Indices of the (at most) ``k`` edges of lowest ``score`` for every receiver ``dst``; among
    equal scores the earlier edge wins."""
    order = torch.argsort(score, stable=True)
    order = order[torch.argsort(dst[order], stable=True)]  # grouped by receiver, best first
    sorted_dst = dst[order]
    rank = torch.arange(order.numel(), device=dst.device) - torch.searchsorted(sorted_dst, sorted_dst, side="left")
    return order[rank < k]
