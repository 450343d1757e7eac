"""The edge list a model runs on: adjacency pairs and nearest neighbours by distance, merged."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .adjacency import adjacency_pairs, cap_neighbors, expand_hops
from .indexing import lookup_pairs, pair_key
from .knn import batch_search, packed_search
from .search_spec import INF, NeighborSearch


@dataclass
class Graph:
    """Directed edges ``src -> dst``, sorted by receiver, over the node ids ``build_graph`` was
    given: packed positions ``0..N-1`` (the model's only convention), or padded-flat ``b * n + i``
    for a padded batch with a mask.

    ``hop``: adjacency hop distance of each edge (1 = bonded, up to ``max_hops``; 0 = found by
    distance only), or ``None`` when no adjacency was given.  ``by_distance``: edges selected by
    the neighbour search, which fade out smoothly at ``valid_radius``; adjacency edges do not.
    """

    dst: Tensor
    src: Tensor
    hop: Tensor | None
    by_distance: Tensor
    shift: Tensor | None = None  # (E, 3) periodic image offsets added to the edge vectors, or None


def build_graph(
    pos: Tensor,
    mask: Tensor | None,
    num_neighbors: float = INF,
    valid_radius: float = INF,
    adj_mat: Tensor | None = None,
    max_hops: int | None = None,
    max_sparse_neighbors: float = INF,
    adjacency_edges: bool = True,
    adjacency: tuple[Tensor, Tensor] | None = None,
    graph_index: Tensor | None = None,
    neighbors: tuple[Tensor, Tensor | None] | None = None,
) -> Graph:
    """Edges of a padded batch (or of packed graphs, see ``graph_index``): adjacency pairs
    (within ``max_hops``, capped) plus nearest neighbours by distance; every edge is labelled with
    its hop count when an adjacency is given.  Edges come sorted by (receiver, sender).

    The adjacency comes either dense, ``adj_mat`` ``(b, n, n)``, or as padded-flat
    ``(dst, src)`` pairs in ``adjacency`` (self pairs and padding already removed).
    ``adjacency_edges=False`` uses the adjacency only to label the distance-selected edges.
    ``num_neighbors = 0`` with adjacency edges gives the adjacency alone.
    ``graph_index``: packed nodes instead: ``pos`` is ``(N, 3)``, ``graph_index`` ``(N,)``, ``mask``
    unused, and node ids (edges, ``adjacency``) are positions ``0..N-1``.
    ``neighbors``: packed only, a graph from outside instead of the search, ``((2, E) pairs
    (receiver, sender), (E, 3) shifts or None)``, checked by the caller; listed pairs fade out
    by distance like searched ones.  A listed pair without a shift that is also a kept adjacency
    pair is dropped (the adjacency edge stands for it, as the search leaves such pairs out).
    Selection is discrete and carries no gradient: distances are recomputed with autograd later.
    """
    packed = graph_index is not None
    size = pos.shape[0] if packed else pos.shape[0] * pos.shape[1]
    device = pos.device
    dst_parts, src_parts, by_distance = [], [], []
    exclude = None
    keys = hops = None
    if adj_mat is not None:
        adjacency = adjacency_pairs(adj_mat, mask)
    if adjacency is not None:
        adj_dst, adj_src = adjacency
        adj_dst, adj_src, adj_hop = expand_hops(adj_dst, adj_src, size, max_hops or 1)
        keys, order = torch.sort(pair_key(adj_dst, adj_src, size))
        hops = adj_hop[order]
        if adjacency_edges:
            keep = cap_neighbors(adj_dst, adj_hop, max_sparse_neighbors)
            dst_parts.append(adj_dst[keep])
            src_parts.append(adj_src[keep])
            by_distance.append(torch.zeros_like(adj_dst[keep], dtype=torch.bool))
            # kept adjacency pairs are not searched again; pairs capped away may come back as
            # nearest neighbours
            exclude = (adj_dst[keep], adj_src[keep])
    shift_parts = []
    if neighbors is not None:
        pairs, shift = neighbors
        dst, src = pairs[0], pairs[1]
        if exclude is not None and exclude[0].numel():
            bonded = torch.isin(pair_key(dst, src, size), pair_key(exclude[0], exclude[1], size))
            if shift is not None:
                bonded &= (shift == 0).all(-1)
            dst, src = dst[~bonded], src[~bonded]
            shift = shift[~bonded] if shift is not None else None
        if shift is not None:  # adjacency edges are within their cell: zero shifts
            shift_parts = [shift.new_zeros(len(dst_parts[0]) if dst_parts else 0, 3), shift]
        dst_parts.append(dst)
        src_parts.append(src)
        by_distance.append(torch.ones_like(dst, dtype=torch.bool))
    elif num_neighbors > 0:
        if pos.dtype in (torch.float16, torch.bfloat16):  # too coarse to rank distances (and no CPU cdist)
            pos = pos.float()
        search = NeighborSearch(num_neighbors, valid_radius)
        if packed:
            dst, src = packed_search(pos, graph_index, search, exclude)
        else:
            dst, src = batch_search(pos, mask, search, exclude)
        dst_parts.append(dst)
        src_parts.append(src)
        by_distance.append(torch.ones_like(dst, dtype=torch.bool))
    if not dst_parts:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return Graph(empty, empty, None if adjacency is None else empty, torch.zeros(0, dtype=torch.bool, device=device))
    dst, src = torch.cat(dst_parts), torch.cat(src_parts)
    order = torch.argsort(pair_key(dst, src, size), stable=True)  # stable: images of one pair keep their order
    dst, src = dst[order], src[order]
    hop = lookup_pairs(keys, hops, dst, src, size) if keys is not None else None  # 0: not adjacent
    shift = torch.cat(shift_parts)[order] if shift_parts else None
    return Graph(dst, src, hop, torch.cat(by_distance)[order], shift)
