"""Neighbour search on a cell grid: each node compared only with the nodes of nearby cells.

Time and memory O(n k) for ``k`` neighbours, against the exhaustive search's O(n^2) time; it
gives exactly the exhaustive search's edges.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from .exhaustive import search_rows
from .indexing import exclusion_keys, no_edges, pair_key, positions_in_graphs
from .ranking import best_per_receiver, k_nearest, pair_distances, pairwise_distances
from .search_spec import INF, NeighborSearch

_GRID_PASSES = 8  # cell sizes h .. 128 h; nodes still unresolved then are searched exhaustively
_CELL_OFFSETS = torch.tensor(  # a cell and its 26 neighbours; built once, moved to each search's device
    [[i, j, l] for i in (-1, 0, 1) for j in (-1, 0, 1) for l in (-1, 0, 1)], device="cpu"
)


def grid_knn_edges(
    pos: Tensor,
    mask: Tensor,
    k: float,
    radius: float,
    exclude: tuple[Tensor, Tensor] | None = None,
    chunk_elements: int = 1 << 23,
) -> tuple[Tensor, Tensor]:
    """Nearest neighbours of a padded batch through a cell grid (see ``grid_search``)."""
    return grid_search(pos, mask, NeighborSearch(k, radius, chunk_elements), exclude)


def grid_search(
    pos: Tensor, mask: Tensor, search: NeighborSearch, exclude: tuple[Tensor, Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """Nearest neighbours through a cell grid: each node is compared only with the nodes of the
    27 cells around its own, cell against cell with one batched distance computation.

    The cell size ``h`` starts at 1.5x the median k-th neighbour distance of a fixed sample of
    nodes (or ``valid_radius`` if smaller).  A node's result is provably exact when its k-th
    neighbour lies within ``h`` or when ``valid_radius <= h`` (both less a margin for rounding).
    The nodes where neither holds (sparse regions, e.g. the halo around a dense core) are searched
    again on grids twice as coarse, until none is left or the cells outgrow the graphs; what
    remains then (graphs with fewer than k other nodes) is searched exhaustively.  Excluded pairs
    are handled by searching a few more neighbours and dropping them.  Ties are broken as in the
    exhaustive search (``k_nearest``), so both give the same edges.  ``k = inf`` with a finite
    ``radius``: every node within it, on one grid of radius-wide cells.
    """
    k, radius = search.num_neighbors, search.valid_radius
    b, n, _ = pos.shape
    device = pos.device
    pos = pos.detach()
    size = b * n
    nodes = mask.reshape(-1).nonzero().flatten()  # padded-flat ids of real nodes
    if nodes.numel() == 0:
        return no_edges(device)
    ex = exclusion_keys(exclude, size)
    extra = torch.bincount(exclude[0], minlength=size)[nodes] if ex is not None else None  # (P,)
    groups = _want_groups(extra, k, nodes.numel(), device)  # neighbours to find before dropping excluded pairs
    want = groups[0][1]

    flat = pos.reshape(size, 3)
    p = flat[nodes]  # (P, 3)
    graph = nodes // n
    if want == INF:  # all within the radius: cells as wide as the radius, no sample needed
        kth = torch.full((1,), INF, dtype=pos.dtype, device=device)
    else:
        sample = spread_sample(nodes)
        sd, ss = search_rows(pos, mask, replace(search, num_neighbors=want, valid_radius=INF), sample)
        kth = torch.zeros(size, dtype=pos.dtype, device=device).scatter_reduce(
            0, sd, pair_distances(flat, sd, ss), "amax"
        )[sample]
    lo = torch.full((b, 3), INF, dtype=p.dtype, device=device).scatter_reduce(0, graph[:, None].expand(-1, 3), p, "amin")
    hi = torch.full((b, 3), -INF, dtype=p.dtype, device=device).scatter_reduce(0, graph[:, None].expand(-1, 3), p, "amax")
    extent = float(torch.where(torch.isfinite(hi - lo), hi - lo, 0).max())  # widest side of any graph
    # cells are found in float64 (in float32 a graph spanning 1e5 put points up to 2 cells off);
    # a result counts as exact only with a margin for the rounding of cells and of distances
    span = extent + float(torch.where(torch.isfinite(lo), lo.abs(), 0).max())

    def margin(length: float) -> float:
        return 16 * (torch.finfo(p.dtype).eps * length + torch.finfo(torch.float64).eps * span)

    largest = radius + 2 * margin(radius) if radius != INF else INF  # cells this wide see the radius
    first_h = max(min(float(kth.median()) * 1.5 if kth.numel() else 1.0, largest), 1e-12)
    out_dst, out_src = [], []
    for pending, want in groups:
        group_search = replace(search, num_neighbors=want)
        h = first_h
        for _ in range(_GRID_PASSES):
            d, s, pending = _grid_pass(p, graph, lo, h, pending, group_search, margin(h))
            out_dst.append(nodes[d])
            out_src.append(nodes[s])
            # cells wider than every graph hold whole graphs: nothing a coarser grid could add
            if not bool(pending.any()) or h >= largest or h > extent:
                break
            h = min(2 * h, largest)
        rest = pending.nonzero().flatten()
        if rest.numel():
            d, s = search_rows(pos, mask, group_search, nodes[rest])
            out_dst.append(d)
            out_src.append(s)
    dst, src = torch.cat(out_dst), torch.cat(out_src)
    if ex is None:
        return dst, src
    # drop excluded pairs, then keep the k nearest of what remains (ties: lowest id first, as
    # the stable selection keeps this order among equal distances)
    keep = ~torch.isin(pair_key(dst, src, size), ex)
    dst, src = dst[keep], src[keep]
    by_id = torch.argsort(src, stable=True)
    dst, src = dst[by_id], src[by_id]
    best = best_per_receiver(dst, pair_distances(flat, dst, src), k)
    return dst[best], src[best]


def spread_sample(nodes: Tensor, size: int = 256) -> Tensor:
    """At most ``size`` of ``nodes``, evenly spaced through them (the grid's probes)."""
    return nodes[torch.linspace(0, nodes.numel() - 1, min(size, nodes.numel()), device=nodes.device).long()]


def _want_groups(extra: Tensor | None, k: float, rows: int, device: torch.device) -> list[tuple[Tensor, float]]:
    """The ``rows`` queries as groups: a (rows,) bool mask and the neighbours to find, ``k`` plus
    the most excluded pairs (``extra``, (rows,)) of any row in the group.  One group, unless
    setting the rows with the most exclusions apart (a hub bonded to many nodes, a virtual node)
    at least halves the candidates: with one group every row would look for ``k`` plus the hub's
    bond count, O(n^2) for a hub bonded to a fixed share of the nodes."""
    everyone = torch.ones(rows, dtype=torch.bool, device=device)
    if extra is None or rows == 0 or k == INF:
        return [(everyone, k)]
    values, counts = torch.unique(extra, return_counts=True)  # ascending
    below = torch.cumsum(counts, 0)  # rows with at most values[i] exclusions
    most = int(values[-1])
    cost = below * (k + values) + (rows - below) * (k + most)  # candidates when splitting at values[i]
    best = int(torch.argmin(cost))
    if best == values.numel() - 1 or 2 * int(cost[best]) > rows * (k + most):
        return [(everyone, k + most)]
    cut = int(values[best])
    return [(extra <= cut, k + cut), (extra > cut, k + most)]


def _cell_table(cell_of: Tensor, ids: Tensor, dummy: int) -> tuple[Tensor, Tensor]:
    """``ids`` (M,) laid out by their cell ``cell_of`` (M,; every cell ``0..max`` holds one at
    least): a ``(cells, widest)`` table padded with ``dummy``, and the number of ids per cell."""
    count, rank = positions_in_graphs(cell_of)  # a cell is a "graph" of its ids
    table = torch.full((count.numel(), int(count.max())), dummy, dtype=torch.long, device=ids.device)
    table[cell_of, rank] = ids
    return table, count


def _cell_chunks(occupancy: Tensor, reach: Tensor, chunk_elements: int) -> list[tuple[Tensor, int, int]]:
    """Query cells in chunks ``(cells, W_q, W_c)``: every chunk pads its cells to ``W_q`` points
    and their 27 neighbour cells to ``W_c``.  Cells are grouped by the powers of two of their own
    and their widest neighbour's occupancy, so padding costs at most 4x the real comparisons even
    where density varies a lot (a dense core in a sparse cloud), and a group is split to keep
    each distance tensor near ``chunk_elements``."""
    size_class = torch.log2(occupancy.double()).floor().long() * 64 + torch.log2(reach.clamp(min=1).double()).floor().long()
    order = torch.argsort(size_class, stable=True)
    _, counts = torch.unique_consecutive(size_class[order], return_counts=True)
    chunks = []
    start = 0
    for count in counts.tolist():
        group = order[start : start + count]
        start += count
        w_q, w_c = int(occupancy[group].max()), int(reach[group].max())
        per_chunk = max(1, chunk_elements // (w_q * 27 * w_c))
        chunks += [(group[i : i + per_chunk], w_q, w_c) for i in range(0, count, per_chunk)]
    return chunks


def _grid_pass(
    p: Tensor, graph: Tensor, lo: Tensor, h: float, pending: Tensor, search: NeighborSearch, slack: float = 0.0
) -> tuple[Tensor, Tensor, Tensor]:
    """One grid of cell size ``h`` over all points ``p`` (P, 3) of graphs ``graph`` (P,) whose
    lower corners are ``lo`` (B, 3); only the ``pending`` (P,) points are queried, each for
    ``search.num_neighbors`` neighbours.  Returns (dst, src) in point ids for the queries whose
    result is provably exact (what they must find lies within ``h - slack`` of them, ``slack``
    covering rounding), and the new pending mask (queries that need a coarser grid)."""
    want, radius = search.num_neighbors, search.valid_radius
    device = p.device
    scaled = torch.floor((p.double() - lo[graph].double()) / h)  # (P, 3) cell coordinates from 0
    dims = (scaled.max(0).values + 3).tolist()  # cells per axis, with a border cell on each side
    if (int(graph.max()) + 1) * dims[0] * dims[1] * dims[2] >= 2.0**62:
        # cell keys would overflow int64 (and alias cells of other graphs): a graph millions of
        # cells wide is left to a coarser grid, or to the exhaustive search
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty, pending
    dims = [int(d) for d in dims]
    cell = scaled.long() + 1  # (P, 3), >= 1 so neighbours stay >= 0

    def key_of(g: Tensor, c: Tensor) -> Tensor:
        return ((g * dims[0] + c[..., 0]) * dims[1] + c[..., 1]) * dims[2] + c[..., 2]

    cell_keys, point_cell = torch.unique(key_of(graph, cell), return_inverse=True)
    dummy = p.shape[0]  # index of a padding point
    table, occupancy = _cell_table(point_cell, torch.arange(p.shape[0], device=device), dummy)
    coords = torch.cat([p, p.new_zeros(1, 3)])  # padding point at the origin, masked below
    # the queries: pending points only, in a table of their own cells
    asked = pending.nonzero().flatten()
    query_cells, asked_cell = torch.unique(point_cell[asked], return_inverse=True)
    queries, asked_count = _cell_table(asked_cell, asked, dummy)  # (query cells, width)
    # a cell's own integer coordinates and graph, from any of its points
    member = table[query_cells, 0]
    cell_xyz, cell_graph = cell[member], graph[member]
    offsets = _CELL_OFFSETS.to(device)
    near_all = key_of(cell_graph[:, None], cell_xyz[:, None, :] + offsets)  # (cells, 27)
    at_all = torch.searchsorted(cell_keys, near_all).clamp(max=cell_keys.numel() - 1)
    present_all = cell_keys[at_all] == near_all
    reach = torch.where(present_all, occupancy[at_all], 0).max(1).values  # widest neighbour cell

    out_dst, out_src, unresolved = [], [], []
    for rows, w_q, w_c in _cell_chunks(asked_count, reach, search.chunk_elements):
        at, present = at_all[rows], present_all[rows]
        cand = torch.where(present[..., None], table[at][..., :w_c], dummy).reshape(rows.numel(), -1)  # (Q, 27 Wc)
        query = queries[rows][:, :w_q]  # (Q, Wq)
        dist = pairwise_distances(coords[query], coords[cand])  # (Q, W, 27 W)
        invalid = (cand == dummy)[:, None, :] | (cand[:, None, :] == query[:, :, None])
        dist = dist.masked_fill(invalid, INF)
        if want == INF:  # every candidate (the radius decides below)
            values, found = dist, cand[:, None, :].expand_as(dist)
        else:
            values, slot = k_nearest(dist, min(want, dist.shape[-1]), cand[:, None, :].expand_as(dist))  # (Q, W, want), nearest first
            found = cand.gather(1, slot.reshape(rows.numel(), -1)).view_as(slot)
        real = query != dummy  # (Q, W)
        within = torch.isfinite(values) & (values <= radius)
        exact = (radius <= h - slack) | (within.sum(-1) >= want) & (values[..., -1] <= h - slack)
        unresolved.append(query[real & ~exact])
        qi, qj, slot_i = (within & (real & exact)[..., None]).nonzero(as_tuple=True)
        out_dst.append(query[qi, qj])
        out_src.append(found[qi, qj, slot_i])
    still = torch.zeros_like(pending)
    still[torch.cat(unresolved)] = True
    return torch.cat(out_dst), torch.cat(out_src), still
