"""Nearest-neighbour edges of a batch: the search picked for each block of graphs.

A padded block is searched on a cell grid or exhaustively, whichever is cheaper for its size and
``k``; a batch of very different graph sizes (and every packed batch) is searched in groups of
similar size, so no graph is searched as if it were as large as the largest.  All of these give
exactly the same edges.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .exhaustive import exhaustive_search, search_rows
from .grid import grid_search, spread_sample
from .indexing import no_edges, positions_in_graphs
from .search_spec import INF, NeighborSearch

GRID_MIN_NODES = 2048
_GRID_MAX_K_FRACTION = 8  # the grid search only for k < n / 8


def knn_edges(
    pos: Tensor,
    mask: Tensor,
    num_neighbors: float,
    valid_radius: float,
    exclude: tuple[Tensor, Tensor] | None = None,
    chunk_elements: int = 1 << 23,
    by_size: bool = True,
) -> tuple[Tensor, Tensor]:
    """Up to ``num_neighbors`` nearest other real nodes within ``valid_radius`` (inclusive).

    ``pos``: ``(B, n, 3)``; ``mask``: ``(B, n)``; ``exclude``: padded-flat ``(dst, src)`` pairs that
    must not be picked (they are already neighbours through the adjacency).  Large graphs with a
    finite ``k`` (or ``k = inf`` and a radius holding few of their nodes) use a cell grid (time
    and memory O(n k)); otherwise rows are compared with all nodes in chunks of
    ``chunk_elements / (B n)`` (memory linear in ``n``, time O(n^2)).
    ``by_size``: when padding to the largest graph would more than double the search (graphs of
    very different sizes), graphs are searched in groups of similar size with their real nodes
    moved to the front (see ``size_groups``).  All of these give exactly the same edges.
    """
    return batch_search(pos, mask, NeighborSearch(num_neighbors, valid_radius, chunk_elements), exclude, by_size)


def packed_knn_edges(
    pos: Tensor,
    graph_index: Tensor,
    num_neighbors: float,
    valid_radius: float,
    exclude: tuple[Tensor, Tensor] | None = None,
    chunk_elements: int = 1 << 23,
) -> tuple[Tensor, Tensor]:
    """``knn_edges`` for packed nodes: ``pos`` ``(N, 3)``, ``graph_index`` ``(N,)``; node ids and
    ``exclude`` pairs are positions ``0..N-1``.  Graphs are searched in groups of similar size,
    so no search (and no tensor) is ever padded to the largest graph."""
    return packed_search(pos, graph_index, NeighborSearch(num_neighbors, valid_radius, chunk_elements), exclude)


def batch_search(
    pos: Tensor,
    mask: Tensor,
    search: NeighborSearch,
    exclude: tuple[Tensor, Tensor] | None = None,
    by_size: bool = True,
) -> tuple[Tensor, Tensor]:
    """``knn_edges`` of a padded batch."""
    b, n, _ = pos.shape
    counts = mask.sum(1)  # (B,)
    groups = size_groups(counts, padded_width=n) if by_size else None
    if groups is None:
        return padded_search(pos, mask, search, exclude)
    ids = mask.reshape(-1).nonzero().flatten()  # padded-flat ids of real nodes
    graph = ids // n
    rank = positions_in_graphs(graph)[1]  # position among its graph's real nodes
    nodes = _Nodes(pos.detach().reshape(b * n, 3)[ids], graph, rank, ids, b * n)
    return grouped_search(nodes, counts, groups, search, exclude)


def packed_search(
    pos: Tensor, graph_index: Tensor, search: NeighborSearch, exclude: tuple[Tensor, Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """``packed_knn_edges``."""
    if pos.shape[0] == 0:
        return no_edges(pos.device)
    counts, rank = positions_in_graphs(graph_index)
    if _one_block(graph_index, counts):  # equal graphs in order: packed ids are padded-flat ids already
        block = torch.ones(counts.numel(), int(counts[0]), dtype=torch.bool, device=pos.device)  # (G, n)
        return padded_search(pos.detach().view(counts.numel(), -1, 3), block, search, exclude)
    ids = torch.arange(pos.shape[0], device=pos.device)
    nodes = _Nodes(pos.detach(), graph_index, rank, ids, pos.shape[0])
    return grouped_search(nodes, counts, size_groups(counts), search, exclude)


def _one_block(graph_index: Tensor, counts: Tensor) -> bool:
    """Whether packed nodes are a full ``(G, n)`` block: every graph the same size, in order (a
    batch without padding, the common case): one search with no regrouping."""
    if counts.numel() == 1:
        return True
    sizes = counts.aminmax()
    return int(sizes.min) == int(sizes.max) and bool((graph_index[1:] >= graph_index[:-1]).all())


def padded_search(
    pos: Tensor, mask: Tensor, search: NeighborSearch, exclude: tuple[Tensor, Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """One padded block ``(B, n)`` as it is: on a cell grid or exhaustively."""
    n = pos.shape[1]
    k, radius = search.num_neighbors, search.valid_radius
    # a k near n (or above it: every neighbour) makes the grid's cells hold whole graphs, each
    # compared with 27 padded copies of itself; the exhaustive search is then the cheaper one
    if n >= GRID_MIN_NODES and k * _GRID_MAX_K_FRACTION < n:
        return grid_search(pos, mask, NeighborSearch(int(k), radius, search.chunk_elements), exclude)
    # a radius alone: the same rule, with the most neighbours any sampled node has within it
    if n >= GRID_MIN_NODES and k == INF and radius < INF:
        if _most_within_radius(pos, mask, search) * _GRID_MAX_K_FRACTION < n:
            return grid_search(pos, mask, search, exclude)
    return exhaustive_search(pos, mask, search, exclude)


def _most_within_radius(pos: Tensor, mask: Tensor, search: NeighborSearch) -> int:
    """The most other nodes within ``search.valid_radius`` of any of 256 evenly spaced real
    nodes: a cheap (O(256 n)) guess of how full the cells of a radius-wide grid would be."""
    nodes = mask.reshape(-1).nonzero().flatten()
    if nodes.numel() == 0:
        return 0
    everyone = NeighborSearch(INF, search.valid_radius, search.chunk_elements)
    dst, _ = search_rows(pos.detach(), mask, everyone, spread_sample(nodes))
    return int(torch.bincount(dst).max()) if dst.numel() else 0


def size_groups(counts: Tensor, padded_width: int | None = None) -> list[Tensor] | None:
    """Graphs with ``counts`` real nodes each, grouped by size class ``ceil(log2(count))``
    (graphs without nodes left out).  Each group is later padded to its own largest graph: at
    most 2x its graphs' sizes, so at most 4x their pairs in an exhaustive search.
    ``padded_width``: the alternative is one search padded to this many nodes per graph; then
    None is returned unless the groups at least halve the compared pairs."""
    nonempty = counts > 0
    if not bool(nonempty.any()):
        return None if padded_width is not None else []
    size_class = torch.where(nonempty, torch.ceil(torch.log2(counts.clamp(min=1).double())).long(), -1)
    groups = [(size_class == c).nonzero().flatten() for c in torch.unique(size_class[nonempty]).tolist()]
    if padded_width is None:
        return groups
    grouped_pairs = sum(g.numel() * int(counts[g].max()) ** 2 for g in groups)
    padded_pairs = int(nonempty.sum()) * padded_width**2
    return groups if 2 * grouped_pairs <= padded_pairs else None


@dataclass
class _Nodes:
    """Real nodes for a grouped search: positions ``(P, 3)``, graph, rank within the graph, and
    the ids edges and exclusions use (all ids below ``id_space``)."""

    pos: Tensor
    graph: Tensor
    rank: Tensor
    ids: Tensor
    id_space: int


def grouped_search(
    nodes: _Nodes,
    counts: Tensor,
    groups: list[Tensor],
    search: NeighborSearch,
    exclude: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """The search one size group at a time, each group's graphs laid out ``(G, width)`` with
    their nodes in rank order and padded only to the group's largest graph.  ``exclude`` pairs
    are renumbered into each group's layout (pairs across groups cannot be edges anyway)."""
    device = nodes.pos.device
    num_graphs = counts.numel()
    group_of_graph = torch.full((num_graphs,), -1, dtype=torch.long, device=device)
    slot_of_graph = torch.zeros(num_graphs, dtype=torch.long, device=device)  # graph's row in its group
    widths = []
    for i, graphs in enumerate(groups):
        group_of_graph[graphs] = i
        slot_of_graph[graphs] = torch.arange(graphs.numel(), device=device)
        widths.append(int(counts[graphs].max()))
    node_group = group_of_graph[nodes.graph]  # (P,)
    compact = slot_of_graph[nodes.graph] * torch.tensor(widths, device=device)[node_group] + nodes.rank  # (P,)
    group_of_id = torch.full((nodes.id_space,), -1, dtype=torch.long, device=device)
    compact_of_id = torch.full((nodes.id_space,), -1, dtype=torch.long, device=device)
    group_of_id[nodes.ids], compact_of_id[nodes.ids] = node_group, compact
    out_dst, out_src = [], []
    for i, (graphs, width) in enumerate(zip(groups, widths)):
        members = (node_group == i).nonzero().flatten()
        here, size = compact[members], graphs.numel() * width
        group_pos = nodes.pos.new_zeros(size, 3).index_copy(0, here, nodes.pos[members]).view(-1, width, 3)
        group_mask = torch.zeros(size, dtype=torch.bool, device=device).index_fill(0, here, True).view(-1, width)
        group_exclude = None
        if exclude is not None and exclude[0].numel():
            keep = (group_of_id[exclude[0]] == i) & (group_of_id[exclude[1]] == i)
            group_exclude = (compact_of_id[exclude[0][keep]], compact_of_id[exclude[1][keep]])
        dst, src = padded_search(group_pos, group_mask, search, group_exclude)
        back = torch.empty(size, dtype=torch.long, device=device).index_copy_(0, here, nodes.ids[members])  # -> ids
        out_dst.append(back[dst])
        out_src.append(back[src])
    if not out_dst:
        return no_edges(device)
    return torch.cat(out_dst), torch.cat(out_src)
