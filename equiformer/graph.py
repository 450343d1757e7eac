"""Neighbour search and edge lists: k nearest neighbours within a radius, adjacency, hop counts.

Everything here returns edge lists (``dst`` receives from ``src``); no ``n x n`` feature tensor is
ever made.  The nearest-neighbour search works on row chunks, so its memory is
O(chunk * n) rather than O(n^2), and on groups of graphs of similar size, so a batch is never
searched as if every graph were as large as the largest; adjacency is turned into an edge list
once and stays sparse.
Selection is discrete and carries no gradient: distances are recomputed with autograd later.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .nn.transforms import functorch_transform_active

INF = float("inf")


@dataclass
class Graph:
    """Directed edges over padded-flat node ids ``b * n + i``.

    ``hop``: adjacency hop distance of each edge (1 = bonded, up to ``max_hops``; 0 = found by
    distance only), or ``None`` when no adjacency was given.  ``by_distance``: edges selected by
    the neighbour search, which fade out smoothly at ``valid_radius``; adjacency edges do not.
    """

    dst: Tensor
    src: Tensor
    hop: Tensor | None
    by_distance: Tensor


def pair_key(dst: Tensor, src: Tensor, size: int) -> Tensor:
    """One integer per (dst, src) pair of node ids below ``size``; sorts by receiver first."""
    return dst * size + src


def lookup_pairs(keys: Tensor, values: Tensor, dst: Tensor, src: Tensor, size: int) -> Tensor:
    """``values`` of the pairs ``(dst, src)`` in the sorted ``keys`` (see ``pair_key``); zeros for
    pairs that are not listed."""
    if keys.numel() == 0:
        return values.new_zeros(dst.shape[0], *values.shape[1:])
    query = pair_key(dst, src, size)
    pos = torch.searchsorted(keys, query).clamp(max=keys.numel() - 1)
    picked = values[pos]
    found = (keys[pos] == query).view(-1, *([1] * (picked.ndim - 1)))
    return torch.where(found, picked, torch.zeros_like(picked))


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
    keep[_best_per_receiver(dst, priority, cap)] = True
    return keep


def _best_per_receiver(dst: Tensor, score: Tensor, k: float) -> Tensor:
    """Indices of the (at most) ``k`` edges of lowest ``score`` for every receiver ``dst``."""
    order = torch.argsort(score, stable=True)
    order = order[torch.argsort(dst[order], stable=True)]  # grouped by receiver, best first
    sorted_dst = dst[order]
    rank = torch.arange(order.numel(), device=dst.device) - torch.searchsorted(sorted_dst, sorted_dst, side="left")
    return order[rank < k]


def k_nearest(dist: Tensor, k: int, ids: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``topk(k, largest=False)`` along the last dimension, except that among candidates tied
    at the k-th distance the lowest ``ids`` win (default: the column index), so the chosen set
    does not depend on the row's length, padding or candidate order.  ``ids``: same shape as
    ``dist``.  Returns (values, slots), nearest first.

    Only rows with a tie across the k-th place (rare off lattices) are sorted in full."""
    width = dist.shape[-1]
    if k == 0 or k >= width:
        return dist.topk(min(k, width), dim=-1, largest=False)
    more, slot = dist.topk(k + 1, dim=-1, largest=False)  # one more, to see a tie at the boundary
    values, slot = more[..., :k].contiguous(), slot[..., :k].contiguous()
    tied = (more[..., k - 1] == more[..., k]) & torch.isfinite(more[..., k])
    if bool(tied.any()):
        rows = tied.nonzero(as_tuple=True)
        row_dist = dist[rows]  # (T, width)
        by_id = torch.argsort(ids[rows], dim=-1, stable=True) if ids is not None else None
        keyed = row_dist if by_id is None else row_dist.gather(-1, by_id)
        best = torch.argsort(keyed, dim=-1, stable=True)[..., :k]  # nearest, lowest id first on ties
        best = best if by_id is None else by_id.gather(-1, best)
        values[rows], slot[rows] = row_dist.gather(-1, best), best
    return values, slot


def _cdist(a: Tensor, b: Tensor) -> Tensor:
    """Distances as every search here computes them: one formula (``cdist`` without the matrix
    product trick), so that the searches rank ties and radius edges to the same last bit
    (``vector_norm`` differs from it in the last bit for ~5 % of float64 pairs)."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def _pair_distances(points: Tensor, dst: Tensor, src: Tensor) -> Tensor:
    """``(E,)`` distances of the pairs ``points[dst]``, ``points[src]``, by ``_cdist``."""
    return _cdist(points[dst][:, None, :], points[src][:, None, :]).view(-1)


def _no_edges(device: torch.device) -> tuple[Tensor, Tensor]:
    """An empty ``(dst, src)`` edge list."""
    empty = torch.zeros(0, dtype=torch.long, device=device)
    return empty, empty


GRID_MIN_NODES = 2048
_GRID_MAX_K_FRACTION = 8  # the grid search only for k < n / 8
_GRID_PASSES = 8  # cell sizes h .. 128 h; nodes still unresolved then are searched exhaustively


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
    b, n, _ = pos.shape
    counts = mask.sum(1)  # (B,)
    groups = size_groups(counts, padded_width=n) if by_size else None
    if groups is None:
        return _padded_knn_edges(pos, mask, num_neighbors, valid_radius, exclude, chunk_elements)
    ids = mask.reshape(-1).nonzero().flatten()  # padded-flat ids of real nodes
    graph = ids // n
    rank = positions_in_graphs(graph)[1]  # position among its graph's real nodes
    nodes = _Nodes(pos.detach().reshape(b * n, 3)[ids], graph, rank, ids, b * n)
    return _grouped_knn_edges(nodes, counts, groups, num_neighbors, valid_radius, exclude, chunk_elements)


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
    if pos.shape[0] == 0:
        return _no_edges(pos.device)
    counts, rank = positions_in_graphs(graph_index)
    ids = torch.arange(pos.shape[0], device=pos.device)
    nodes = _Nodes(pos.detach(), graph_index, rank, ids, pos.shape[0])
    return _grouped_knn_edges(nodes, counts, size_groups(counts), num_neighbors, valid_radius, exclude, chunk_elements)


def positions_in_graphs(graph_index: Tensor) -> tuple[Tensor, Tensor]:
    """``graph_index`` ``(N,)`` -> (nodes per graph ``(B,)``, every node's position within its
    graph ``(N,)``, in node order)."""
    counts = torch.bincount(graph_index)
    order = torch.argsort(graph_index, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    position = torch.empty_like(graph_index)
    position[order] = torch.arange(order.numel(), device=graph_index.device) - starts[graph_index[order]]
    return counts, position


def _padded_knn_edges(pos, mask, num_neighbors, valid_radius, exclude, chunk_elements) -> tuple[Tensor, Tensor]:
    n = pos.shape[1]
    # a k near n (or above it: every neighbour) makes the grid's cells hold whole graphs, each
    # compared with 27 padded copies of itself; the exhaustive search is then the cheaper one
    if n >= GRID_MIN_NODES and num_neighbors * _GRID_MAX_K_FRACTION < n:
        return grid_knn_edges(pos, mask, int(num_neighbors), valid_radius, exclude, chunk_elements)
    # a radius alone: the same rule, with the most neighbours any sampled node has within it
    if n >= GRID_MIN_NODES and num_neighbors == INF and valid_radius < INF:
        if _most_within_radius(pos, mask, valid_radius, chunk_elements) * _GRID_MAX_K_FRACTION < n:
            return grid_knn_edges(pos, mask, INF, valid_radius, exclude, chunk_elements)
    return brute_knn_edges(pos, mask, num_neighbors, valid_radius, exclude, chunk_elements)


def _most_within_radius(pos: Tensor, mask: Tensor, radius: float, chunk_elements: int) -> int:
    """The most other nodes within ``radius`` of any of 256 evenly spaced real nodes: a cheap
    (O(256 n)) guess of how full the cells of a radius-wide grid would be."""
    nodes = mask.reshape(-1).nonzero().flatten()
    if nodes.numel() == 0:
        return 0
    dst, _ = _brute_rows(pos.detach(), mask, INF, radius, None, chunk_elements, _spread_sample(nodes))
    return int(torch.bincount(dst).max()) if dst.numel() else 0


def _spread_sample(nodes: Tensor, size: int = 256) -> Tensor:
    """At most ``size`` of ``nodes``, evenly spaced through them (the grid's probes)."""
    return nodes[torch.linspace(0, nodes.numel() - 1, min(size, nodes.numel()), device=nodes.device).long()]


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


def _grouped_knn_edges(
    nodes: _Nodes, counts: Tensor, groups: list[Tensor], num_neighbors, valid_radius, exclude, chunk_elements
) -> tuple[Tensor, Tensor]:
    """The search one size group at a time, each group's graphs laid out ``(G, width)`` with
    their nodes in rank order and padded only to the group's largest graph."""
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
        dst, src = _padded_knn_edges(group_pos, group_mask, num_neighbors, valid_radius, group_exclude, chunk_elements)
        back = torch.empty(size, dtype=torch.long, device=device).index_copy_(0, here, nodes.ids[members])  # -> ids
        out_dst.append(back[dst])
        out_src.append(back[src])
    if not out_dst:
        return _no_edges(device)
    return torch.cat(out_dst), torch.cat(out_src)


def brute_knn_edges(
    pos: Tensor,
    mask: Tensor,
    num_neighbors: float,
    valid_radius: float,
    exclude: tuple[Tensor, Tensor] | None = None,
    chunk_elements: int = 1 << 23,
) -> tuple[Tensor, Tensor]:
    """Exhaustive search (see ``knn_edges``), ``rows`` query nodes of every graph at a time."""
    b, n, _ = pos.shape
    device = pos.device
    if b * n == 0:
        return _no_edges(device)
    pos = pos.detach()
    rows = max(1, chunk_elements // max(1, b * n))
    starts = list(range(0, n, rows))
    if exclude is not None and exclude[0].numel():
        ex_b, ex_i, ex_j = exclude[0] // n, exclude[0] % n, exclude[1] % n
        order = torch.argsort(ex_i, stable=True)
        ex_b, ex_i, ex_j = ex_b[order], ex_i[order], ex_j[order]
        # excluded pairs of every row chunk: one search (and one sync) for all chunks
        ex_bounds = torch.searchsorted(ex_i, torch.tensor(starts + [n], device=device)).tolist()
    else:
        ex_i = None
    out_dst, out_src = [], []
    arange_n = torch.arange(n, device=device)
    for chunk, start in enumerate(starts):
        stop = min(n, start + rows)
        dist = _cdist(pos[:, start:stop], pos)  # (B, s, n)
        invalid = ~(mask[:, start:stop, None] & mask[:, None, :])
        invalid |= (arange_n[start:stop, None] == arange_n[None, :])[None]
        dist = dist.masked_fill(invalid, INF)
        if ex_i is not None:
            lo, hi = ex_bounds[chunk], ex_bounds[chunk + 1]
            dist[ex_b[lo:hi], ex_i[lo:hi] - start, ex_j[lo:hi]] = INF
        if num_neighbors == INF or num_neighbors >= n - 1:
            bi, i, j = (torch.isfinite(dist) & (dist <= valid_radius)).nonzero(as_tuple=True)
        else:
            values, j_idx = k_nearest(dist, int(num_neighbors))  # (B, s, k)
            bi, i, slot = (torch.isfinite(values) & (values <= valid_radius)).nonzero(as_tuple=True)
            j = j_idx[bi, i, slot]
        out_dst.append(bi * n + i + start)
        out_src.append(bi * n + j)
    return torch.cat(out_dst), torch.cat(out_src)


def _exclusion_keys(exclude: tuple[Tensor, Tensor] | None, size: int) -> Tensor | None:
    if exclude is None or exclude[0].numel() == 0:
        return None
    return torch.sort(pair_key(exclude[0], exclude[1], size))[0]


def _nearest_in_rows(dist: Tensor, cand: Tensor, k: float, radius: float) -> tuple[Tensor, Tensor]:
    """Rows of candidate distances ``(Q, M)`` (inf = not a candidate) -> (row, candidate id) of
    the ``k`` nearest within ``radius`` in each row."""
    if k != INF and k < dist.shape[1]:
        dist, slot = k_nearest(dist, int(k), cand)
        cand = cand.gather(1, slot)
    row, col = (torch.isfinite(dist) & (dist <= radius)).nonzero(as_tuple=True)
    return row, cand[row, col]


def _brute_rows(pos, mask, k, radius, exclude, chunk_elements, rows) -> tuple[Tensor, Tensor]:
    """Exhaustive neighbours of selected query nodes only (the grid search's fallback)."""
    b, n, _ = pos.shape
    flat_pos, flat_mask = pos.reshape(b * n, 3), mask.reshape(b * n)
    ex = _exclusion_keys(exclude, b * n)
    out_dst, out_src = [], []
    per_chunk = max(1, chunk_elements // max(1, n))
    arange_n = torch.arange(n, device=pos.device)
    rows = torch.sort(rows)[0]  # rows of one graph together: most chunks hold a single graph
    for start in range(0, rows.numel(), per_chunk):
        q = rows[start : start + per_chunk]  # (Q,)
        cand = (q // n)[:, None] * n + arange_n[None, :]  # (Q, n) same graph
        first, last = (q[[0, -1]] // n).tolist()
        if first == last:  # one graph: distances to its nodes without gathering them (~6x faster)
            dist = _cdist(flat_pos[q], pos[first])
        else:
            dist = _cdist(flat_pos[q][:, None, :], flat_pos[cand]).squeeze(1)  # (Q, n)
        invalid = ~flat_mask[cand] | (cand == q[:, None])
        if ex is not None:
            invalid |= torch.isin(pair_key(q[:, None].expand_as(cand), cand, b * n), ex)
        row, src = _nearest_in_rows(dist.masked_fill(invalid, INF), cand, k, radius)
        out_dst.append(q[row])
        out_src.append(src)
    return torch.cat(out_dst), torch.cat(out_src)


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


def grid_knn_edges(
    pos: Tensor,
    mask: Tensor,
    k: float,
    radius: float,
    exclude: tuple[Tensor, Tensor] | None = None,
    chunk_elements: int = 1 << 23,
) -> tuple[Tensor, Tensor]:
    """Nearest neighbours through a cell grid: each node is compared only with the nodes of the
    27 cells around its own, cell against cell with one batched ``cdist``.

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
    b, n, _ = pos.shape
    device = pos.device
    pos = pos.detach()
    size = b * n
    nodes = mask.reshape(-1).nonzero().flatten()  # padded-flat ids of real nodes
    if nodes.numel() == 0:
        return _no_edges(device)
    ex = _exclusion_keys(exclude, size)
    extra = torch.bincount(exclude[0], minlength=size)[nodes] if ex is not None else None  # (P,)
    groups = _want_groups(extra, k, nodes.numel(), device)  # neighbours to find before dropping excluded pairs
    want = groups[0][1]

    flat = pos.reshape(size, 3)
    p = flat[nodes]  # (P, 3)
    graph = nodes // n
    if want == INF:  # all within the radius: cells as wide as the radius, no sample needed
        kth = torch.full((1,), INF, dtype=pos.dtype, device=device)
    else:
        sample = _spread_sample(nodes)
        sd, ss = _brute_rows(pos, mask, want, INF, None, chunk_elements, sample)
        kth = torch.zeros(size, dtype=pos.dtype, device=device).scatter_reduce(
            0, sd, _pair_distances(flat, sd, ss), "amax"
        )[sample]
    lo = torch.full((b, 3), INF, dtype=p.dtype, device=device).scatter_reduce(0, graph[:, None].expand(-1, 3), p, "amin")
    hi = torch.full((b, 3), -INF, dtype=p.dtype, device=device).scatter_reduce(0, graph[:, None].expand(-1, 3), p, "amax")
    extent = float(torch.where(torch.isfinite(hi - lo), hi - lo, 0).max())  # widest side of any graph
    # cells are found in float64 (in float32 a graph spanning 1e5 put points up to 2 cells off);
    # a result counts as exact only with a margin for the rounding of cells and of distances
    span = extent + float(torch.where(torch.isfinite(lo), lo.abs(), 0).max())

    def margin(size: float) -> float:
        return 16 * (torch.finfo(p.dtype).eps * size + torch.finfo(torch.float64).eps * span)

    largest = radius + 2 * margin(radius) if radius != INF else INF  # cells this wide see the radius
    first_h = max(min(float(kth.median()) * 1.5 if kth.numel() else 1.0, largest), 1e-12)
    out_dst, out_src = [], []
    for pending, want in groups:
        h = first_h
        for _ in range(_GRID_PASSES):
            d, s, pending = _grid_pass(p, graph, lo, h, pending, want, radius, chunk_elements, margin(h))
            out_dst.append(nodes[d])
            out_src.append(nodes[s])
            # cells wider than every graph hold whole graphs: nothing a coarser grid could add
            if not bool(pending.any()) or h >= largest or h > extent:
                break
            h = min(2 * h, largest)
        rest = pending.nonzero().flatten()
        if rest.numel():
            d, s = _brute_rows(pos, mask, want, radius, None, chunk_elements, nodes[rest])
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
    best = _best_per_receiver(dst, _pair_distances(flat, dst, src), k)
    return dst[best], src[best]


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


_CELL_OFFSETS = torch.tensor([[i, j, l] for i in (-1, 0, 1) for j in (-1, 0, 1) for l in (-1, 0, 1)])  # a cell and its 26 neighbours


def _cell_table(cell_of: Tensor, ids: Tensor, dummy: int) -> tuple[Tensor, Tensor]:
    """``ids`` (M,) laid out by their cell ``cell_of`` (M,; every cell ``0..max`` holds one at
    least): a ``(cells, widest)`` table padded with ``dummy``, and the number of ids per cell."""
    count, rank = positions_in_graphs(cell_of)  # a cell is a "graph" of its ids
    table = torch.full((count.numel(), int(count.max())), dummy, dtype=torch.long, device=ids.device)
    table[cell_of, rank] = ids
    return table, count


def _grid_pass(
    p: Tensor, graph: Tensor, lo: Tensor, h: float, pending: Tensor, want: float, radius: float, chunk_elements: int,
    slack: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """One grid of cell size ``h`` over all points ``p`` (P, 3) of graphs ``graph`` (P,) whose
    lower corners are ``lo`` (B, 3); only the ``pending`` (P,) points are queried.  Returns
    (dst, src) in point ids for the queries whose result is provably exact (what they must find
    lies within ``h - slack`` of them, ``slack`` covering rounding), and the new pending mask
    (queries that need a coarser grid)."""
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
    for rows, w_q, w_c in _cell_chunks(asked_count, reach, chunk_elements):
        at, present = at_all[rows], present_all[rows]
        cand = torch.where(present[..., None], table[at][..., :w_c], dummy).reshape(rows.numel(), -1)  # (Q, 27 Wc)
        query = queries[rows][:, :w_q]  # (Q, Wq)
        dist = _cdist(coords[query], coords[cand])  # (Q, W, 27 W)
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
) -> Graph:
    """Edges of a padded batch (or of packed graphs, see ``graph_index``): adjacency pairs
    (within ``max_hops``, capped) plus nearest neighbours by distance; every edge is labelled with
    its hop count when an adjacency is given.

    The adjacency comes either dense, ``adj_mat`` ``(b, n, n)``, or as padded-flat
    ``(dst, src)`` pairs in ``adjacency`` (self pairs and padding already removed).
    ``adjacency_edges=False`` uses the adjacency only to label the distance-selected edges.
    ``num_neighbors = 0`` with adjacency edges gives the adjacency alone.
    ``graph_index``: packed nodes instead: ``pos`` is ``(N, 3)``, ``graph_index`` ``(N,)``, ``mask``
    unused, and node ids (edges, ``adjacency``) are positions ``0..N-1``.
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
    if num_neighbors > 0:
        if pos.dtype in (torch.float16, torch.bfloat16):  # too coarse to rank distances (and no CPU cdist)
            pos = pos.float()
        if packed:
            dst, src = packed_knn_edges(pos, graph_index, num_neighbors, valid_radius, exclude)
        else:
            dst, src = knn_edges(pos, mask, num_neighbors, valid_radius, exclude)
        dst_parts.append(dst)
        src_parts.append(src)
        by_distance.append(torch.ones_like(dst, dtype=torch.bool))
    if not dst_parts:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return Graph(empty, empty, None if adjacency is None else empty, torch.zeros(0, dtype=torch.bool, device=device))
    dst, src = torch.cat(dst_parts), torch.cat(src_parts)
    order = torch.argsort(pair_key(dst, src, size))
    dst, src = dst[order], src[order]
    hop = lookup_pairs(keys, hops, dst, src, size) if keys is not None else None  # 0: not adjacent
    return Graph(dst, src, hop, torch.cat(by_distance)[order])
