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
) -> tuple[Tensor, Tensor | None]:
    """Softmax over each receiver's incoming edges (and optionally itself).

    ``logits``: ``(E, H)``; ``weight``: ``(E,)`` non-negative factors (smooth cutoff) that multiply
    ``exp(logit)``, so an edge fades out continuously; ``self_logits``: ``(N, H)``.  Without a self
    term the denominator also holds a null key (logit 0, value 0): otherwise a receiver whose only
    neighbours are fading out would still give them all its weight, and the output would jump
    as they cross the radius.  Computed in at least float32.
    Returns ``(alpha_edges (E, H), alpha_self (N, H) or None)``.
    """
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


def segment_sum(values: Tensor, index: Tensor, num_segments: int) -> Tensor:
    """Sum rows of ``values`` into ``num_segments`` buckets."""
    out = values.new_zeros(num_segments, *values.shape[1:])
    return out.index_add(0, index, values)
