"""Per-forward edge constants shared by every layer: frames, harmonics, radial inputs, envelopes.

Computed once from coordinates with autograd on (forces flow through all of it), then passed to
every block.  ``EdgeGeometry.rotate`` (and its ``inverse``) is the only place features change frame.
"""
from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..so3 import block_diagonal, edge_to_axis_rotation, permuted_block_diagonal, spherical_harmonics, wigner_D
from .fiber import Fiber, edge_order_major, layout
from .scatter import segment_sum
from .transforms import functorch_transform_active

TENSOR_PRODUCTS = ("so2", "cg")


def edge_vectors(pos: Tensor, dst: Tensor, src: Tensor) -> tuple[Tensor, Tensor]:
    """``(vec, dist)``: ``pos[src] - pos[dst]`` (E, 3) and its length (E,), with a finite gradient
    for coincident nodes."""
    vec = pos.index_select(0, src) - pos.index_select(0, dst)
    sq = (vec * vec).sum(-1)
    nonzero = sq > 0
    dist = torch.where(nonzero, torch.sqrt(torch.where(nonzero, sq, torch.ones_like(sq))), torch.zeros_like(sq))
    return vec, dist


# CPU batched GEMMs with large matrices and few output columns are faster computed transposed,
# ``(x^T D^T)^T`` with a copy back.  benchmarks/rotation_products.py (forward+backward, 16,384
# edges, 2 cores): R = 17, C = 8 took 8.9 ms direct and 6.9 ms transposed (C = 2: 8.0 and 4.2);
# for R <= 9 the direct product was faster at every C (up to 1.6x), R = 12 was mixed, and at
# C = 16 the direct product won for every R
_TRANSPOSED_MIN_ROWS, _TRANSPOSED_MAX_CHANNELS = 13, 8


def transposed_product(d: Tensor, x: Tensor) -> Tensor:
    """``d @ x`` for ``d`` (E, R, R) and ``x`` (E, R, C), computed as ``(x^T d^T)^T``: a
    non-contiguous (E, R, C) view."""
    return torch.bmm(x.transpose(1, 2), d.transpose(1, 2)).transpose(1, 2)


def _apply_rotation(d: Tensor, x: Tensor) -> Tensor:
    """``d @ x`` for ``d`` (E, R, R) and ``x`` (E, R, C); the result may be non-contiguous."""
    rows, channels = x.shape[-2:]
    if rows >= _TRANSPOSED_MIN_ROWS and channels <= _TRANSPOSED_MAX_CHANNELS and x.device.type == "cpu":
        return transposed_product(d, x)
    return d @ x


@dataclass
class EdgeGeometry:
    """Edges ``src -> dst`` over ``num_nodes`` packed nodes, with everything layers need.

    ``wigner[l]``: ``(E, 2l+1, 2l+1)`` rotations into the edge frame (SO(2) path only).
    ``sh``: ``(E, (L_f+1)^2)`` edge harmonics (Clebsch-Gordan path only).
    ``weight``: ``(E,)`` smooth cutoff factor for aggregation and attention.
    ``edge_attr``: ``(E, F)`` invariant edge scalars for the radial networks.
    ``zero_length``: indices of edges whose two nodes coincide (no direction).
    ``node_graph``: ``(N,)`` graph index of every node, for global (per-graph) layers.
    ``edge_chunk_size``: if set, layers process edges in chunks of at most this many (whole
    receivers, see ``receiver_chunks``) and recompute them in the backward pass, bounding
    activation memory for very large graphs.
    ``neighbors``: set when the edges are sorted by receiver, exactly this many each (a k-nearest
    neighbour graph without padding): per-receiver work then runs as dense batched products.
    """

    dst: Tensor
    src: Tensor
    num_nodes: int
    node_graph: Tensor
    num_graphs: int
    weight: Tensor
    edge_attr: Tensor
    zero_length: Tensor
    wigner: list[Tensor] | None = None
    sh: Tensor | None = None
    edge_chunk_size: int | None = None
    neighbors: int | None = None
    _blocks: dict = field(default_factory=dict, repr=False)
    _chunk_cache: dict = field(default_factory=dict, repr=False)

    @staticmethod
    def build(
        vec: Tensor,
        dst: Tensor,
        src: Tensor,
        num_nodes: int,
        node_graph: Tensor,
        num_graphs: int,
        weight: Tensor,
        edge_attr: Tensor,
        lmax: int,
        tensor_product: str,
    ) -> "EdgeGeometry":
        """``vec``: ``(E, 3)`` edge vectors ``pos[src] - pos[dst]`` (see ``edge_vectors``)."""
        zero_length = ((vec * vec).sum(-1) == 0).nonzero().flatten()
        wigner = sh = None
        if tensor_product == "so2":
            wigner = wigner_D(lmax, edge_to_axis_rotation(vec))
        elif tensor_product == "cg":
            sh = spherical_harmonics(2 * lmax, vec)
        else:
            raise ValueError(f"tensor_product must be one of {TENSOR_PRODUCTS}, got {tensor_product!r}")
        geometry = EdgeGeometry(dst, src, num_nodes, node_graph, num_graphs, weight, edge_attr, zero_length, wigner, sh)
        geometry.neighbors = uniform_in_degree(dst, num_nodes)
        return geometry

    @property
    def num_edges(self) -> int:
        return self.dst.numel()

    @property
    def chunked(self) -> bool:
        return self.edge_chunk_size is not None and self.num_edges > self.edge_chunk_size

    def receiver_chunks(self) -> list[tuple[int, "EdgeGeometry"]]:
        """The edges split at receiver boundaries into chunks of at most ``edge_chunk_size``
        edges (a receiver with more is a chunk of its own): per chunk, how many receivers it
        covers and its receiver-local geometry.

        Chunks cover consecutive receivers ``a..b-1`` (every node, in order, so their receiver
        counts split any ``(N, ...)`` tensor); in a chunk's geometry they are nodes ``0..b-a-1``
        (``dst``, ``num_nodes``, ``node_graph``), while ``src`` still indexes all nodes.  Each
        receiver's edges lie in one chunk, so a chunk computes its receivers' softmax and sums
        whole, in one pass, as the unchunked layer would.
        """
        bounds = self._chunk_bounds()
        order = bounds.get("order")
        chunks = []
        for a, b, start, stop in bounds["cuts"]:
            edges = slice(start, stop) if order is None else order[start:stop]
            chunks.append((b - a, self._receiver_subset(a, b, edges)))
        return chunks

    def _chunk_bounds(self) -> dict:
        """Receiver ranges and edge ranges of the chunks (in receiver order: ``order`` when
        ``dst`` is not sorted), computed once per geometry and chunk size (the copies that
        reversible blocks make share them: they depend on the edge list only)."""
        size = self.edge_chunk_size or max(self.num_edges, 1)
        if self._chunk_cache.get("size") == size:
            return self._chunk_cache
        self._chunk_cache.clear()
        dst = self.dst
        if self.num_edges > 1 and not bool((dst[1:] >= dst[:-1]).all()):
            self._chunk_cache["order"] = torch.argsort(dst, stable=True)
            dst = dst[self._chunk_cache["order"]]
        counts = torch.bincount(dst, minlength=self.num_nodes)
        starts = [0] + torch.cumsum(counts, 0).tolist()  # edges of receiver i: starts[i]..starts[i+1]
        cuts, a = [], 0
        while a < self.num_nodes:
            # the most whole receivers whose edges fit, and at least one edge (a receiver with
            # more edges alone); the last chunk takes the receivers without edges at the end
            b = max(bisect.bisect_right(starts, starts[a] + size) - 1, bisect.bisect_right(starts, starts[a]))
            b = self.num_nodes if starts[b] == self.num_edges else b
            cuts.append((a, b, starts[a], starts[b]))
            a = b
        self._chunk_cache.update(cuts=cuts, size=size)
        return self._chunk_cache

    def _receiver_subset(self, a: int, b: int, edges: slice | Tensor) -> "EdgeGeometry":
        """Receivers ``a..b-1`` with their ``edges`` (a slice, or indices in receiver order)."""
        if isinstance(edges, slice):
            zero = self.zero_length
            zero = zero[(zero >= edges.start) & (zero < edges.stop)] - edges.start
        else:
            zero = torch.isin(edges, self.zero_length).nonzero().flatten()
        return replace(
            self,
            dst=self.dst[edges] - a,
            src=self.src[edges],
            num_nodes=b - a,
            node_graph=self.node_graph[a:b],
            weight=self.weight[edges],
            edge_attr=self.edge_attr[edges],
            zero_length=zero,
            wigner=[w[edges] for w in self.wigner] if self.wigner is not None else None,
            sh=self.sh[edges] if self.sh is not None else None,
            edge_chunk_size=None,  # ``neighbors`` stays: whole receivers of a regular graph are regular
            _blocks={},  # rotation matrices are rebuilt per chunk run (see ``checkpoint_chunk``)
            _chunk_cache={},
        )

    def _rotation_block(self, start: int, stop: int, row_order: tuple[int, ...] | None = None, scalar_rows: int = 0) -> Tensor:
        """Block-diagonal Wigner matrices for degrees ``start..stop-1`` (rows optionally permuted
        to the order-major layout), after ``scalar_rows`` identity rows; built once per forward.
        One matrix is kept per degree range, with the most identity rows asked for so far: fewer
        are a view of its lower-right corner (no second copy of the Wigner entries)."""
        key = (start, stop, row_order is not None)
        rows = sum(2 * l + 1 for l in range(start, stop))
        cached = self._blocks.get(key)
        if cached is None or cached.shape[-1] - rows < scalar_rows:
            blocks = self.wigner[start:stop]
            edges = blocks[0].shape[0]
            if len(blocks) == 1 and not scalar_rows and row_order is None:
                self._blocks[key] = blocks[0]  # the Wigner block itself, no copy
                return blocks[0]
            if scalar_rows:  # identity rows as 1 x 1 blocks of ones
                blocks = [blocks[0].new_ones(edges, 1, 1)] * scalar_rows + list(blocks)
            if row_order is None:
                cached = block_diagonal(blocks)
            else:  # the rows after the identity ones permuted, in the same pass
                order = (*range(scalar_rows), *(r + scalar_rows for r in row_order))
                cached = permuted_block_diagonal(blocks, order)
            self._blocks[key] = cached
        skip = cached.shape[-1] - rows - scalar_rows
        return cached[:, skip:, skip:] if skip else cached

    def rotate(self, x: Tensor, fiber: Fiber, inverse: bool = False) -> Tensor:
        """Flat features into the edge frame (``inverse``: back to the global frame).

        Degree 0 is untouched; each run of degrees with equal channel counts is one batched
        matrix product with the block-diagonal Wigner matrix, ``(E, R, R) @ (E, R, C)``.  When
        all degrees >= 1 share a channel count the rows come out (and go back in) order-major,
        the layout the SO(2) convolution works in (see ``fiber.edge_order_major``); if moreover
        ``C_0`` is a multiple of that count, degree 0 rides along as identity rows of the same
        product, so the whole rotation is one product over the unsplit features.
        """
        if self.wigner is None or len(fiber) == 1:
            return x
        lay = layout(fiber)
        edges = x.shape[0]
        d = self._folded_rotation(fiber)
        if d is not None:
            if inverse:
                d = d.transpose(-1, -2)
            return _apply_rotation(d, x.reshape(edges, d.shape[-1], fiber[1])).reshape(edges, lay.size)
        if edge_order_major(fiber, "so2"):
            groups, row_order = [(1, len(fiber))], lay.row_order
        else:
            groups, row_order = lay.rotation_groups, None
        sizes = [fiber[0]] + [lay.offsets[stop] - lay.offsets[start] for start, stop in groups]
        pieces = x.split(sizes, dim=1)
        parts = [pieces[0]]
        for (start, stop), block, size in zip(groups, pieces[1:], sizes[1:]):
            d = self._rotation_block(start, stop, row_order)  # (E, R, R)
            if inverse:
                d = d.transpose(-1, -2)
            parts.append(_apply_rotation(d, block.view(edges, size // fiber[start], fiber[start])).reshape(edges, size))
        return torch.cat(parts, dim=-1)

    def _folded_rotation(self, fiber: Fiber) -> Tensor | None:
        """``(E, R, R)`` rotation of the whole fiber as one matrix when it is order-major and
        ``C_0`` a multiple of the shared l > 0 channel count C: degree 0 rides along as
        ``C_0 / C`` identity rows, so a rotation is one product with no split or concatenation
        (forward and backward), for ~(R + C_0/C)^2 / R^2 the multiply-adds.  Else None."""
        if self.wigner is None or len(fiber) == 1:
            return None
        if not (edge_order_major(fiber, "so2") and fiber[0] % fiber[1] == 0):
            return None
        return self._rotation_block(1, len(fiber), layout(fiber).row_order, fiber[0] // fiber[1])

    def _dense_rotation(self, fiber: Fiber) -> Tensor | None:
        """For a regular graph (``neighbors``) and a fiber rotated as one product: the rotations
        into the edge frames of every receiver's edges stacked, ``(N, k R, R)`` (a view), else None."""
        if self.neighbors is None or self.chunked:
            return None
        d = self._folded_rotation(fiber)  # (E, R, R)
        if d is None or not d.is_contiguous():
            return None
        rows = d.shape[-1]
        return d.view(self.num_nodes, self.neighbors * rows, rows)

    def rotate_receivers(self, x: Tensor, fiber: Fiber, plus: Tensor | None = None) -> Tensor:
        """Node features ``(N, F)`` of every edge's receiver in that edge's frame: ``(E, F)``,
        plus the edge-frame tensor ``plus`` if given.  On a regular graph one
        ``(N, k R, R) @ (N, R, C)`` product, without gathering ``x``; the sum is part of it."""
        d = self._dense_rotation(fiber)
        if d is None:
            rotated = self.rotate(x.index_select(0, self.dst), fiber)
            return rotated if plus is None else plus + rotated
        rows = d.shape[-1]
        x = x.reshape(self.num_nodes, rows, -1)  # (N, R, C)
        if plus is None:
            return torch.bmm(d, x).view(self.num_edges, -1)
        return torch.baddbmm(plus.reshape(self.num_nodes, d.shape[1], -1), d, x).view(self.num_edges, -1)

    def aggregate(self, x: Tensor, fiber: Fiber) -> Tensor:
        """Edge-frame features ``(E, F)`` rotated back to the global frame and summed over each
        receiver's edges: ``(N, F)``.  On a regular graph one ``(N, R, k R) @ (N, k R, C)``
        product, which also does the sum."""
        d = self._dense_rotation(fiber)
        if d is None:
            return segment_sum(self.rotate(x, fiber, inverse=True), self.dst, self.num_nodes)
        rows = d.shape[-1]
        out = torch.bmm(d.transpose(1, 2), x.reshape(self.num_nodes, self.neighbors * rows, -1))  # (N, R, C)
        return out.view(self.num_nodes, -1)

    # --- plumbing for reversible blocks, which must hand every differentiable input to autograd
    def float_tensors(self) -> list[Tensor]:
        out = [self.weight, self.edge_attr]
        out += list(self.wigner) if self.wigner is not None else [self.sh]
        return out

    def with_float_tensors(self, tensors: list[Tensor]) -> "EdgeGeometry":
        weight, edge_attr, *rest = tensors
        if self.wigner is not None:
            return replace(self, weight=weight, edge_attr=edge_attr, wigner=list(rest), _blocks={})
        return replace(self, weight=weight, edge_attr=edge_attr, sh=rest[0], _blocks={})


def checkpoint_chunk(fn: Callable[..., Any], chunk: EdgeGeometry, *args: Tensor | None) -> Any:
    """``fn(chunk, *args)``, its activations recomputed in backward instead of stored.

    Both runs start from an empty cache of rotation matrices: a cache filled by the forward would
    let the recomputation skip building (and saving) them, which checkpoint refuses.  Under a
    ``torch.func`` transform (no saved-tensor hooks there) it is a plain call."""
    if functorch_transform_active():
        return fn(chunk, *args)
    return checkpoint(lambda *a: fn(replace(chunk, _blocks={}), *a), *args, use_reentrant=False)


def over_receiver_chunks(
    fn: Callable[..., tuple[Tensor | None, ...]],
    geometry: EdgeGeometry,
    sources: tuple[Tensor, ...],
    receivers: tuple[Tensor | None, ...] = (),
) -> tuple[Tensor | None, ...]:
    """``fn(chunk, *sources, *receiver_rows)`` over ``geometry.receiver_chunks()``, each chunk
    recomputed in backward (``checkpoint_chunk``), outputs concatenated over the chunks.

    ``sources``: node tensors indexed by the chunk's (global) ``src``, passed whole;
    ``receivers``: ``(N, ...)`` node tensors (or None), passed as the chunk's own rows.  ``fn``
    returns a tuple of ``(receivers of the chunk, ...)`` tensors (or None): no node-sized tensor
    is made per chunk in the forward pass.  The backward pass still makes one per chunk and
    source tensor: the gradient of the rows the chunk gathered (``index_select``'s backward)."""
    chunks = geometry.receiver_chunks()
    sizes = [count for count, _ in chunks]
    rows = [t.split(sizes) if t is not None else [None] * len(sizes) for t in receivers]
    outs = [checkpoint_chunk(fn, chunk, *sources, *(r[i] for r in rows)) for i, (_, chunk) in enumerate(chunks)]
    return tuple(None if parts[0] is None else torch.cat(parts) for parts in zip(*outs))


def uniform_in_degree(dst: Tensor, num_nodes: int) -> int | None:
    """``k`` if ``dst`` (sorted) is every node ``0..N-1`` exactly ``k >= 1`` times in order, else None."""
    edges = dst.numel()
    if num_nodes == 0 or edges == 0 or edges % num_nodes:
        return None
    k = edges // num_nodes
    receivers = torch.arange(num_nodes, device=dst.device)[:, None]
    return k if bool((dst.view(num_nodes, k) == receivers).all()) else None


__all__ = ["EdgeGeometry", "TENSOR_PRODUCTS", "checkpoint_chunk", "edge_vectors", "over_receiver_chunks", "uniform_in_degree"]
