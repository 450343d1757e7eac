"""Adjacency as edge lists: pairs from a dense matrix, pairs within a number of hops, and a cap on
the adjacency edges of each receiver.  Sparse throughout: no ``n x n`` tensor beyond the input."""
from __future__ import annotations

import torch
from torch import Tensor

from ..transforms import functorch_transform_active
from .indexing import pair_key
from .ranking import best_per_receiver
from .search_spec import INF


def adjacency_pairs(adj_mat: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """``adj_mat[b, i, j]`` true: ``j`` is a neighbour of ``i``.  Self loops and padding dropped."""
    b, n = mask.shape
    valid = adj_mat.bool() & mask[:, :, None] & mask[:, None, :]
    valid = valid & ~torch.eye(n, dtype=torch.bool, device=mask.device)
    bi, i, j = valid.nonzero(as_tuple=True)
    return bi * n + i, bi * n + j


def _compose(dst: Tensor, src: Tensor, adj_dst: Tensor, adj_src: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Pairs ``(i, j)`` with ``i -> m`` in the first list and ``m -> j`` in the adjacency.

    A sparse join: adjacency sorted by its receiver, each pair expanded by the degree of ``m``.
    """
    counts = torch.bincount(adj_dst, minlength=size)
    starts = torch.cumsum(counts, 0) - counts
    order = torch.argsort(adj_dst, stable=True)
    fan = counts[src]  # (P,) how many continuations each pair has
    pair = torch.repeat_interleave(torch.arange(dst.numel(), device=dst.device), fan)
    offset = torch.arange(pair.numel(), device=dst.device) - torch.repeat_interleave(torch.cumsum(fan, 0) - fan, fan)
    nxt = order[starts[src[pair]] + offset]
    return dst[pair], adj_src[nxt]


def expand_hops(dst: Tensor, src: Tensor, size: int, max_hops: int) -> tuple[Tensor, Tensor, Tensor]:
    """All pairs within ``max_hops`` steps of the adjacency, with their shortest hop count.

    Direct bonds stay hop 1; the frontier of hop ``k`` is the new pairs of ``frontier_{k-1} A``.
    """
    hop = torch.ones_like(dst)
    keys = torch.unique(pair_key(dst, src, size))
    all_dst, all_src, all_hop = [dst], [src], [hop]
    front_dst, front_src = dst, src
    for k in range(2, max_hops + 1):
        if front_dst.numel() == 0:
            break
        d, s = _compose(front_dst, front_src, dst, src, size)
        new_keys = torch.unique(pair_key(d, s, size))
        new_keys = new_keys[~torch.isin(new_keys, keys) & (new_keys // size != new_keys % size)]
        front_dst, front_src = new_keys // size, new_keys % size
        all_dst.append(front_dst)
        all_src.append(front_src)
        all_hop.append(torch.full_like(front_dst, k))
        keys = torch.cat([keys, new_keys])
    return torch.cat(all_dst), torch.cat(all_src), torch.cat(all_hop)


def cap_neighbors(dst: Tensor, hop: Tensor, cap: float) -> Tensor:
    """Boolean keep-mask allowing at most ``cap`` edges per receiver.

    Lower hop counts go first (direct bonds before 2-hop pairs); ties are broken at random with
    torch's global generator, so the choice is reproducible under ``torch.manual_seed``.  Under a
    ``torch.func`` transform (``hessian`` runs the forward under vmap, which refuses random
    calls) ties take a fixed pseudo-random order of the edges instead.
    """
    if cap == INF or dst.numel() == 0 or torch.bincount(dst).max() <= cap:
        return torch.ones_like(dst, dtype=torch.bool)
    keep = torch.zeros_like(dst, dtype=torch.bool)
    if functorch_transform_active():
        edge = torch.arange(dst.numel(), dtype=torch.float64, device=dst.device)
        tie = torch.frac(edge * 0.6180339887498949)  # golden-ratio sequence: spread over [0, 1)
    else:
        tie = torch.rand(dst.shape, dtype=torch.float64, device=dst.device)
    priority = hop.to(torch.float64) + tie
    keep[best_per_receiver(dst, priority, cap)] = True
    return keep
