"""Who sends to whom: the edge list of one forward pass, and how it is cut into chunks.

``EdgeGraph`` holds no coordinates and no frames (those are ``EdgeGeometry``'s, built on top of a
graph): just the connectivity every layer shares and the facts derived from it once, the uniform
in-degree of a regular graph and the receiver chunks.  It is immutable; everything is given or
computed when it is made, except the chunk bounds, computed at the first chunked layer and cached.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

# per chunk: receivers a..b-1 and their edges start..stop, in receiver order (see ``chunk_bounds``)
ChunkCut = tuple[int, int, int, int]


def uniform_in_degree(dst: Tensor, num_nodes: int) -> int | None:
    """``k`` if ``dst`` (sorted) is every node ``0..N-1`` exactly ``k >= 1`` times in order, else None."""
    edges = dst.numel()
    if num_nodes == 0 or edges == 0 or edges % num_nodes:
        return None
    k = edges // num_nodes
    receivers = torch.arange(num_nodes, device=dst.device)[:, None]  # (N, 1)
    return k if bool((dst.view(num_nodes, k) == receivers).all()) else None


@dataclass(frozen=True, eq=False)
class EdgeGraph:
    """Edges ``src -> dst`` over ``num_nodes`` packed nodes.

    ``dst``, ``src``: ``(E,)`` receiver and sender of every edge.
    ``node_graph``: ``(N,)`` graph index of every node, for global (per-graph) layers, over
    ``num_graphs`` graphs.
    ``neighbors``: ``k`` when the edges are sorted by receiver, exactly ``k`` each (a k-nearest
    neighbour graph without padding): per-receiver work then runs as dense batched products.
    ``build`` finds it; a chunk of whole receivers of a regular graph keeps it.
    ``edge_chunk_size``: if set, edge layers process the edges in chunks of at most this many
    (whole receivers, see ``chunk_bounds``) and recompute them in the backward pass, bounding
    activation memory for very large graphs.
    """

    dst: Tensor
    src: Tensor
    num_nodes: int
    node_graph: Tensor
    num_graphs: int
    neighbors: int | None = None
    edge_chunk_size: int | None = None

    @staticmethod
    def build(
        dst: Tensor, src: Tensor, num_nodes: int, node_graph: Tensor, num_graphs: int, edge_chunk_size: int | None = None
    ) -> EdgeGraph:
        """The graph with its uniform in-degree found (one host sync)."""
        return EdgeGraph(dst, src, num_nodes, node_graph, num_graphs, uniform_in_degree(dst, num_nodes), edge_chunk_size)

    @property
    def num_edges(self) -> int:
        return self.dst.numel()

    @property
    def chunked(self) -> bool:
        """Whether edge layers run chunk by chunk (more edges than one chunk holds)."""
        return self.edge_chunk_size is not None and self.num_edges > self.edge_chunk_size

    @cached_property
    def chunk_bounds(self) -> tuple[list[ChunkCut], Tensor | None]:
        """The edges split at receiver boundaries into chunks of at most ``edge_chunk_size`` edges
        (a receiver with more is a chunk of its own): ``(cuts, order)``, per chunk ``(a, b,
        start, stop)``, receivers ``a..b-1`` with the edges ``start..stop`` in receiver order, and
        ``order`` the ``(E,)`` edge indices in receiver order when ``dst`` is not sorted (else None).

        Chunks cover every node in order, so their receiver counts split any ``(N, ...)`` tensor;
        each receiver's edges lie in one chunk, so a chunk computes its receivers' softmax and
        sums whole.  Computed once per graph (one host sync): the geometry copies that reversible
        blocks make share their graph.
        """
        size = self.edge_chunk_size or max(self.num_edges, 1)
        dst, order = self.dst, None
        if self.num_edges > 1 and not bool((dst[1:] >= dst[:-1]).all()):
            order = torch.argsort(dst, stable=True)  # (E,)
            dst = dst[order]
        counts = torch.bincount(dst, minlength=self.num_nodes)  # (N,)
        starts = [0] + torch.cumsum(counts, 0).tolist()  # edges of receiver i: starts[i]..starts[i+1]
        cuts, a = [], 0
        while a < self.num_nodes:
            # the most whole receivers whose edges fit, and at least one edge (a receiver with
            # more edges alone); the last chunk takes the receivers without edges at the end
            b = max(bisect.bisect_right(starts, starts[a] + size) - 1, bisect.bisect_right(starts, starts[a]))
            b = self.num_nodes if starts[b] == self.num_edges else b
            cuts.append((a, b, starts[a], starts[b]))
            a = b
        return cuts, order

    def receiver_subset(self, a: int, b: int, edges: slice | Tensor) -> EdgeGraph:
        """Receivers ``a..b-1`` with their ``edges`` (a slice, or indices in receiver order), as
        nodes ``0..b-a-1`` (``dst``, ``num_nodes``, ``node_graph``), while ``src`` still indexes
        all nodes.  Unchunked; ``neighbors`` stays (whole receivers of a regular graph are regular)."""
        return EdgeGraph(
            dst=self.dst[edges] - a,
            src=self.src[edges],
            num_nodes=b - a,
            node_graph=self.node_graph[a:b],
            num_graphs=self.num_graphs,
            neighbors=self.neighbors,
        )


__all__ = ["EdgeGraph", "uniform_in_degree"]
