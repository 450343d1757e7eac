"""Edge layers run chunk by chunk (``edge_chunk_size``): bounded activation memory on big graphs.

A chunk is a run of whole receivers with their edges (``EdgeGraph.chunk_bounds``), so a layer
computes each receiver's softmax and sums in one pass within its chunk, exactly as unchunked; each
chunk is recomputed in the backward pass instead of keeping its edge activations.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..transforms import functorch_transform_active
from .edge_geometry import EdgeGeometry


def receiver_chunks(geometry: EdgeGeometry) -> list[tuple[int, EdgeGeometry]]:
    """Per chunk of ``geometry.graph.chunk_bounds``: how many receivers it covers, and its
    receiver-local geometry (receivers ``a..b-1`` are nodes ``0..b-a-1`` of it; ``src`` still
    indexes all nodes)."""
    cuts, order = geometry.graph.chunk_bounds
    chunks = []
    for a, b, start, stop in cuts:
        edges = slice(start, stop) if order is None else order[start:stop]
        chunks.append((b - a, geometry.receiver_subset(a, b, edges)))
    return chunks


def checkpoint_chunk(fn: Callable[..., Any], chunk: EdgeGeometry, *args: Tensor | None) -> Any:
    """``fn(chunk, *args)``, its activations recomputed in backward instead of stored.

    Both runs start from an empty cache of rotation matrices: a cache filled by the forward would
    let the recomputation skip building (and saving) them, which checkpoint refuses.  Under a
    ``torch.func`` transform (no saved-tensor hooks there) it is a plain call."""
    if functorch_transform_active():
        return fn(chunk, *args)
    return checkpoint(lambda *a: fn(chunk.without_cache(), *a), *args, use_reentrant=False)


def over_receiver_chunks(
    fn: Callable[..., tuple[Tensor | None, ...]],
    geometry: EdgeGeometry,
    sources: tuple[Tensor, ...],
    receivers: tuple[Tensor | None, ...] = (),
) -> tuple[Tensor | None, ...]:
    """``fn(chunk, *sources, *receiver_rows)`` over ``receiver_chunks(geometry)``, each chunk
    recomputed in backward (``checkpoint_chunk``), outputs concatenated over the chunks.

    ``sources``: node tensors indexed by the chunk's (global) ``src``, passed whole;
    ``receivers``: ``(N, ...)`` node tensors (or None), passed as the chunk's own rows.  ``fn``
    returns a tuple of ``(receivers of the chunk, ...)`` tensors (or None): no node-sized tensor
    is made per chunk in the forward pass.  The backward pass still makes one per chunk and
    source tensor: the gradient of the rows the chunk gathered (``index_select``'s backward)."""
    chunks = receiver_chunks(geometry)
    sizes = [count for count, _ in chunks]
    rows = [t.split(sizes) if t is not None else [None] * len(sizes) for t in receivers]
    outs = [checkpoint_chunk(fn, chunk, *sources, *(r[i] for r in rows)) for i, (_, chunk) in enumerate(chunks)]
    return tuple(None if parts[0] is None else torch.cat(parts) for parts in zip(*outs))


__all__ = ["checkpoint_chunk", "over_receiver_chunks", "receiver_chunks"]
