"""Reductions over edges grouped by receiver: the sparse replacements for dense softmax and mean."""
from __future__ import annotations

import torch
from torch import Tensor


def segment_softmax(
    logits: Tensor,
    dst: Tensor,
    num_nodes: int,
    weight: Tensor | None = None,
    self_logits: Tensor | None = None,
    neighbors: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Softmax over each receiver's incoming edges (and optionally itself).

    ``logits``: ``(E, H)``; ``weight``: ``(E,)`` non-negative factors (smooth cutoff) that multiply
    ``exp(logit)``, so an edge fades out continuously; ``self_logits``: ``(N, H)``.  Without a self
    term the denominator also holds a null key (logit 0, value 0): otherwise a receiver whose only
    neighbours are fading out would still give them all its weight, and the output would jump
    as they cross the radius.  Computed in at least float32.
    ``neighbors``: set when the edges are sorted by receiver, exactly that many each: the same
    softmax then runs on a dense ``(N, k, H)`` view, without scatters.
    Returns ``(alpha_edges (E, H), alpha_self (N, H) or None)``.
    """
    if neighbors is not None:
        return _regular_softmax(logits, num_nodes, neighbors, weight, self_logits)
    out_dtype = logits.dtype
    work = torch.promote_types(out_dtype, torch.float32)
    logits = logits.to(work)
    index = dst[:, None].expand_as(logits)
    peak = logits.new_full((num_nodes, logits.shape[1]), float("-inf"))
    peak = peak.scatter_reduce(0, index, logits, reduce="amax", include_self=True)
    if self_logits is not None:
        self_logits = self_logits.to(work)
        peak = torch.maximum(peak, self_logits)
    else:
        peak = peak.clamp(min=0.0)  # the null key's logit
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak)).detach()  # shift only
    numer = torch.exp(logits - peak.index_select(0, dst))  # (E, H)
    if weight is not None:
        numer = numer * weight.to(work)[:, None]
    denom = torch.zeros_like(peak).index_add(0, dst, numer)
    self_numer = None
    if self_logits is not None:
        self_numer = torch.exp(self_logits - peak)
        denom = denom + self_numer
    else:
        denom = denom + torch.exp(-peak)  # the null key
    denom = torch.where(denom > 0, denom, torch.ones_like(denom))  # receivers with nothing to attend
    alpha = (numer / denom.index_select(0, dst)).to(out_dtype)
    alpha_self = (self_numer / denom).to(out_dtype) if self_numer is not None else None
    return alpha, alpha_self


def _regular_softmax(
    logits: Tensor, num_nodes: int, k: int, weight: Tensor | None, self_logits: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """``segment_softmax`` for ``k`` edges per receiver, stored receiver by receiver."""
    out_dtype = logits.dtype
    work = torch.promote_types(out_dtype, torch.float32)
    heads = logits.shape[1]
    scores = logits.to(work).view(num_nodes, k, heads)
    if self_logits is not None:
        scores = torch.cat([scores, self_logits.to(work)[:, None]], dim=1)  # (N, k+1, H)
    else:
        scores = torch.cat([scores, scores.new_zeros(num_nodes, 1, heads)], dim=1)  # the null key
    peak = scores.amax(dim=1, keepdim=True).detach()  # (N, 1, H): finite, every row has a key
    numer = torch.exp(scores - peak)  # (N, k+1, H)
    if weight is not None:  # the self or null key (last column) keeps factor 1
        factors = torch.cat([weight.to(work).view(num_nodes, k), numer.new_ones(num_nodes, 1)], dim=1)
        numer = numer * factors[..., None]
    denom = numer.sum(dim=1, keepdim=True)  # (N, 1, H)
    # 0 when the peak key has weight 0 and the others underflow: as the scatter path, alpha 0
    alpha = numer / torch.where(denom > 0, denom, torch.ones_like(denom))
    edges, last = alpha.to(out_dtype).split([k, 1], dim=1)
    return edges.reshape(num_nodes * k, heads), (last[:, 0] if self_logits is not None else None)


def segment_sum(values: Tensor, index: Tensor, num_segments: int) -> Tensor:
    """Sum rows of ``values`` into ``num_segments`` buckets."""
    out = values.new_zeros(num_segments, *values.shape[1:])
    return out.index_add(0, index, values)
