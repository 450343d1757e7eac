"""Per-forward edge constants shared by every layer: frames, harmonics, radial inputs, envelopes.

``EdgeGeometry`` is built on an ``EdgeGraph`` (who sends to whom, see ``edge_graph``) from the
edge vectors, once per forward with autograd on (forces flow through all of it), then passed to
every block.  ``EdgeGeometry.rotate`` (and its ``inverse``) is the only place features change
frame, into the layout ``EdgeLayout`` decides (see ``edge_layout``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from ..so3 import (
    block_diagonal,
    edge_to_axis_rotation,
    permuted_block_diagonal,
    spherical_harmonics,
    wigner_D,
)
from .edge_graph import EdgeGraph
from .edge_layout import EdgeLayout
from .fiber import Fiber, layout
from .rotation_kernels import apply_rotation
from .scatter import segment_sum


def edge_vectors(pos: Tensor, dst: Tensor, src: Tensor, shift: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(vec, dist)``: ``pos[src] - pos[dst] (+ shift)`` (E, 3) and its length (E,), with a
    finite gradient for coincident nodes.  ``shift``: ``(E, 3)`` periodic image offsets."""
    vec = pos.index_select(0, src) - pos.index_select(0, dst)
    if shift is not None:
        vec = vec + shift
    sq = (vec * vec).sum(-1)
    nonzero = sq > 0
    dist = torch.where(nonzero, torch.sqrt(torch.where(nonzero, sq, torch.ones_like(sq))), torch.zeros_like(sq))
    return vec, dist


@dataclass(frozen=True, eq=False)
class EdgeGeometry:
    """The frames of an ``EdgeGraph``'s edges, with everything per edge that layers need.

    ``graph``: the edge list; its fields (``dst``, ``src``, ``num_nodes``, ``node_graph``,
    ``num_graphs``, ``neighbors``, ``chunked``...) are readable here too.
    ``edge_layout``: the tensor product and the edge-frame layout ``rotate`` produces.
    ``weight``: ``(E,)`` smooth cutoff factor for aggregation and attention.
    ``edge_attr``: ``(E, F)`` invariant edge scalars for the radial networks.
    ``zero_length``: indices of edges whose two nodes coincide (no direction).
    ``wigner[l]``: ``(E, 2l+1, 2l+1)`` rotations into the edge frame (SO(2) path only).
    ``sh``: ``(E, (L_f+1)^2)`` edge harmonics (Clebsch-Gordan path only).

    Immutable; the one thing it fills in as layers use it is its cache of block-diagonal rotation
    matrices (built from ``wigner`` at their first use, once per forward).  Copies made with
    ``dataclasses.replace`` start with an empty cache.
    """

    graph: EdgeGraph
    edge_layout: EdgeLayout
    weight: Tensor
    edge_attr: Tensor
    zero_length: Tensor
    wigner: list[Tensor] | None = None
    sh: Tensor | None = None
    _blocks: dict = field(default_factory=dict, init=False, repr=False)

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
        edge_layout: EdgeLayout,
        edge_chunk_size: int | None = None,
    ) -> EdgeGeometry:
        """The graph (``EdgeGraph.build``) and its frames in one call.  ``vec``: ``(E, 3)`` edge
        vectors ``pos[src] - pos[dst]`` (see ``edge_vectors``)."""
        graph = EdgeGraph.build(dst, src, num_nodes, node_graph, num_graphs, edge_chunk_size)
        return EdgeGeometry.on_graph(graph, vec, weight, edge_attr, lmax, edge_layout)

    @staticmethod
    def on_graph(graph: EdgeGraph, vec: Tensor, weight: Tensor, edge_attr: Tensor, lmax: int, edge_layout: EdgeLayout) -> EdgeGeometry:
        """The frames of ``graph``'s edges, ``vec`` ``(E, 3)``, for features up to degree ``lmax``:
        Wigner blocks when ``edge_layout`` works in edge frames, else harmonics up to ``2 lmax``
        (the filter degrees a Clebsch-Gordan product of two degree-``lmax`` fibers needs)."""
        zero_length = ((vec * vec).sum(-1) == 0).nonzero().flatten()  # (Z,)
        if edge_layout.in_edge_frames:
            wigner = wigner_D(lmax, edge_to_axis_rotation(vec))
            mmax = edge_layout.mmax
            if mmax is not None and zero_length.numel():
                # an edge without a direction has the identity frame, in which dropping orders
                # |m| > mmax would not be equivariant: there it keeps whole degrees l <= mmax only
                keep = vec.new_ones(vec.shape[0]).index_fill(0, zero_length, 0.0)[:, None, None]  # (E, 1, 1)
                wigner = wigner[: mmax + 1] + [w * keep for w in wigner[mmax + 1 :]]
            return EdgeGeometry(graph, edge_layout, weight, edge_attr, zero_length, wigner=wigner)
        return EdgeGeometry(graph, edge_layout, weight, edge_attr, zero_length, sh=spherical_harmonics(2 * lmax, vec))

    # --- the graph's fields, read by layers through the one object they are handed
    @property
    def dst(self) -> Tensor:
        return self.graph.dst

    @property
    def src(self) -> Tensor:
        return self.graph.src

    @property
    def num_nodes(self) -> int:
        return self.graph.num_nodes

    @property
    def node_graph(self) -> Tensor:
        return self.graph.node_graph

    @property
    def num_graphs(self) -> int:
        return self.graph.num_graphs

    @property
    def neighbors(self) -> int | None:
        return self.graph.neighbors

    @property
    def num_edges(self) -> int:
        return self.graph.num_edges

    @property
    def chunked(self) -> bool:
        return self.graph.chunked

    def receiver_subset(self, a: int, b: int, edges: slice | Tensor) -> EdgeGeometry:
        """Receivers ``a..b-1`` with their ``edges`` (a slice, or indices in receiver order): see
        ``EdgeGraph.receiver_subset``.  Its rotation matrices are built afresh when used (see
        ``edge_chunks.checkpoint_chunk``), not sliced from this geometry's."""
        if isinstance(edges, slice):
            zero = self.zero_length
            zero = zero[(zero >= edges.start) & (zero < edges.stop)] - edges.start
        else:
            zero = torch.isin(edges, self.zero_length).nonzero().flatten()
        return EdgeGeometry(
            self.graph.receiver_subset(a, b, edges),
            self.edge_layout,
            weight=self.weight[edges],
            edge_attr=self.edge_attr[edges],
            zero_length=zero,
            wigner=[w[edges] for w in self.wigner] if self.wigner is not None else None,
            sh=self.sh[edges] if self.sh is not None else None,
        )

    def without_cache(self) -> EdgeGeometry:
        """The same geometry with an empty cache of rotation matrices."""
        return replace(self)

    def _rotation_block(self, start: int, stop: int, rows: tuple[int, ...] | None = None, scalar_rows: int = 0) -> Tensor:
        """Block-diagonal Wigner matrices for degrees ``start..stop-1``, ``(E, R', R)``: their
        ``rows`` only (see ``EdgeLayout.rotation_rows``: permuted to the edge layout, dropped
        orders left out; None for all, in order), after ``scalar_rows`` identity rows; built once
        per forward.  One matrix is kept per degree range and row choice, with the most identity
        rows asked for so far: fewer are a view of its lower-right corner (no second copy of the
        Wigner entries)."""
        key = (start, stop, rows)
        width = sum(2 * l + 1 for l in range(start, stop))
        cached = self._blocks.get(key)
        if cached is None or cached.shape[-1] - width < scalar_rows:
            blocks = self.wigner[start:stop]
            edges = blocks[0].shape[0]
            if len(blocks) == 1 and not scalar_rows and rows is None:
                self._blocks[key] = blocks[0]  # the Wigner block itself, no copy
                return blocks[0]
            if scalar_rows:  # identity rows as 1 x 1 blocks of ones
                blocks = [blocks[0].new_ones(edges, 1, 1)] * scalar_rows + list(blocks)
            if rows is None:
                cached = block_diagonal(blocks)  # (E, R, R)
            else:  # the rows after the identity ones chosen and permuted, in the same pass
                order = (*range(scalar_rows), *(r + scalar_rows for r in rows))
                cached = permuted_block_diagonal(blocks, order)  # (E, R', R)
            self._blocks[key] = cached
        skip = cached.shape[-1] - width - scalar_rows
        return cached[:, skip:, skip:] if skip else cached

    def rotate(self, x: Tensor, fiber: Fiber, inverse: bool = False) -> Tensor:
        """Flat features into the edge frame: ``(E, F)`` degree-major -> ``(E, F_e)`` in
        ``edge_layout``'s layout (``inverse``: back to the global frame, degree-major; orders
        dropped by ``mmax`` come back as zeros); the identity without frames (Clebsch-Gordan).

        Degree 0 is untouched; each run of degrees with equal channel counts is one batched
        matrix product with the block-diagonal Wigner matrix, ``(E, R', R) @ (E, R, C)``, whose
        rows are those the edge layout keeps, in its order.  An order-major fiber is one such
        run; if moreover ``C_0`` is a multiple of its channel count, degree 0 rides along as
        identity rows of the same product, so the whole rotation is one product over the unsplit
        features (``_folded_rotation``).
        """
        if self.wigner is None or len(fiber) == 1:
            return x
        edges = x.shape[0]
        d = self._folded_rotation(fiber)  # (E, R', R)
        if d is not None:
            if inverse:
                d = d.transpose(-1, -2)
            return apply_rotation(d, x.reshape(edges, d.shape[-1], fiber[1])).reshape(edges, d.shape[-2] * fiber[1])
        groups = [(1, len(fiber))] if self.edge_layout.order_major(fiber) else layout(fiber).rotation_groups
        rotations = []
        for start, stop in groups:
            d = self._rotation_block(start, stop, self.edge_layout.rotation_rows(fiber, start, stop))  # (E, R', R)
            rotations.append(d.transpose(-1, -2) if inverse else d)
        pieces = x.split([fiber[0]] + [d.shape[-1] * fiber[start] for d, (start, _) in zip(rotations, groups)], dim=1)
        parts = [pieces[0]]
        for d, (start, _), block in zip(rotations, groups, pieces[1:]):
            channels = fiber[start]
            parts.append(apply_rotation(d, block.view(edges, d.shape[-1], channels)).reshape(edges, d.shape[-2] * channels))
        return torch.cat(parts, dim=-1)  # (E, F_e), or (E, F) inverse

    def _folded_rotation(self, fiber: Fiber) -> Tensor | None:
        """``(E, R', R)`` rotation of the whole fiber as one matrix when it is order-major and
        ``C_0`` a multiple of the shared l > 0 channel count C: degree 0 rides along as
        ``C_0 / C`` identity rows, so a rotation is one product with no split or concatenation
        (forward and backward), for ~(R + C_0/C)^2 / R^2 the multiply-adds.  Else None."""
        if self.wigner is None or len(fiber) == 1:
            return None
        if not (self.edge_layout.order_major(fiber) and fiber[0] % fiber[1] == 0):
            return None
        rows = self.edge_layout.rotation_rows(fiber, 1, len(fiber))
        return self._rotation_block(1, len(fiber), rows, fiber[0] // fiber[1])

    def _dense_rotation(self, fiber: Fiber) -> Tensor | None:
        """For a regular graph (``neighbors``) and a fiber rotated as one product: the rotations
        into the edge frames of every receiver's edges stacked, ``(N, k R', R)`` (a view), else None."""
        if self.neighbors is None or self.chunked:
            return None
        d = self._folded_rotation(fiber)  # (E, R', R)
        if d is None or not d.is_contiguous():
            return None
        return d.view(self.num_nodes, self.neighbors * d.shape[-2], d.shape[-1])

    def rotate_receivers(self, x: Tensor, fiber: Fiber, plus: Tensor | None = None) -> Tensor:
        """Node features ``(N, F)`` of every edge's receiver in that edge's frame: ``(E, F_e)``,
        plus the edge-frame tensor ``plus`` if given.  On a regular graph one
        ``(N, k R', R) @ (N, R, C)`` product, without gathering ``x``; the sum is part of it."""
        d = self._dense_rotation(fiber)
        if d is None:
            rotated = self.rotate(x.index_select(0, self.dst), fiber)
            return rotated if plus is None else plus + rotated
        x = x.reshape(self.num_nodes, d.shape[-1], -1)  # (N, R, C)
        if plus is None:
            return torch.bmm(d, x).view(self.num_edges, -1)
        return torch.baddbmm(plus.reshape(self.num_nodes, d.shape[1], -1), d, x).view(self.num_edges, -1)

    def aggregate(self, x: Tensor, fiber: Fiber) -> Tensor:
        """Edge-frame features ``(E, F_e)`` rotated back to the global frame and summed over each
        receiver's edges: ``(N, F)``.  On a regular graph one ``(N, R, k R') @ (N, k R', C)``
        product, which also does the sum."""
        d = self._dense_rotation(fiber)
        if d is None:
            return segment_sum(self.rotate(x, fiber, inverse=True), self.dst, self.num_nodes)
        out = torch.bmm(d.transpose(1, 2), x.reshape(self.num_nodes, d.shape[1], -1))  # (N, R, C)
        return out.view(self.num_nodes, -1)

    # --- plumbing for reversible blocks, which must hand every differentiable input to autograd
    def float_tensors(self) -> list[Tensor]:
        """The differentiable per-edge tensors, in the order ``with_float_tensors`` takes them."""
        out = [self.weight, self.edge_attr]
        out += list(self.wigner) if self.wigner is not None else [self.sh]
        return out

    def with_float_tensors(self, tensors: list[Tensor]) -> EdgeGeometry:
        """The same geometry (same graph) over other ``float_tensors``, with an empty cache."""
        weight, edge_attr, *rest = tensors
        if self.wigner is not None:
            return replace(self, weight=weight, edge_attr=edge_attr, wigner=list(rest))
        return replace(self, weight=weight, edge_attr=edge_attr, sh=rest[0])


__all__ = ["EdgeGeometry", "EdgeGraph", "EdgeLayout", "edge_vectors"]
