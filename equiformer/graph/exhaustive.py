"""Exhaustive neighbour search: every query node compared with every node of its graph.

Time O(n^2) per graph, memory O(chunk * n): rows are compared in chunks, never as an ``n x n``
matrix.  It is the reference the grid search must match, and the grid's fallback for the nodes a
grid cannot settle.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .indexing import exclusion_keys, no_edges, pair_key
from .ranking import k_nearest, pairwise_distances
from .search_spec import INF, NeighborSearch


def brute_knn_edges(
    pos: Tensor,
    mask: Tensor,
    num_neighbors: float,
    valid_radius: float,
    exclude: tuple[Tensor, Tensor] | None = None,
    chunk_elements: int = 1 << 23,
) -> tuple[Tensor, Tensor]:
    """Exhaustive search of a padded batch (see ``knn_edges``), in chunks of query rows."""
    return exhaustive_search(pos, mask, NeighborSearch(num_neighbors, valid_radius, chunk_elements), exclude)


def exhaustive_search(
    pos: Tensor, mask: Tensor, search: NeighborSearch, exclude: tuple[Tensor, Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """``brute_knn_edges``: ``pos`` ``(B, n, 3)``, ``mask`` ``(B, n)``, ``exclude`` padded-flat
    ``(dst, src)`` pairs; the same rows of every graph are compared at a time."""
    b, n, _ = pos.shape
    device = pos.device
    if b * n == 0:
        return no_edges(device)
    pos = pos.detach()
    num_neighbors, valid_radius = search.num_neighbors, search.valid_radius
    rows = max(1, search.chunk_elements // max(1, b * n))
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
        dist = pairwise_distances(pos[:, start:stop], pos)  # (B, s, n)
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


def search_rows(
    pos: Tensor, mask: Tensor, search: NeighborSearch, rows: Tensor, exclude: tuple[Tensor, Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """Exhaustive neighbours of the query nodes ``rows`` (padded-flat ids) only: the grid search's
    fallback and its probes."""
    b, n, _ = pos.shape
    flat_pos, flat_mask = pos.reshape(b * n, 3), mask.reshape(b * n)
    ex = exclusion_keys(exclude, b * n)
    out_dst, out_src = [], []
    per_chunk = max(1, search.chunk_elements // max(1, n))
    arange_n = torch.arange(n, device=pos.device)
    rows = torch.sort(rows)[0]  # rows of one graph together: most chunks hold a single graph
    for start in range(0, rows.numel(), per_chunk):
        q = rows[start : start + per_chunk]  # (Q,)
        cand = (q // n)[:, None] * n + arange_n[None, :]  # (Q, n) same graph
        first, last = (q[[0, -1]] // n).tolist()
        if first == last:  # one graph: distances to its nodes without gathering them (much faster)
            dist = pairwise_distances(flat_pos[q], pos[first])
        else:
            dist = pairwise_distances(flat_pos[q][:, None, :], flat_pos[cand]).squeeze(1)  # (Q, n)
        invalid = ~flat_mask[cand] | (cand == q[:, None])
        if ex is not None:
            invalid |= torch.isin(pair_key(q[:, None].expand_as(cand), cand, b * n), ex)
        row, src = _nearest_in_rows(dist.masked_fill(invalid, INF), cand, search.num_neighbors, search.valid_radius)
        out_dst.append(q[row])
        out_src.append(src)
    return torch.cat(out_dst), torch.cat(out_src)


def _nearest_in_rows(dist: Tensor, cand: Tensor, k: float, radius: float) -> tuple[Tensor, Tensor]:
    """Rows of candidate distances ``(Q, M)`` (inf = not a candidate) -> (row, candidate id) of
    the ``k`` nearest within ``radius`` in each row."""
    if k != INF and k < dist.shape[1]:
        dist, slot = k_nearest(dist, int(k), cand)
        cand = cand.gather(1, slot)
    row, col = (torch.isfinite(dist) & (dist <= radius)).nonzero(as_tuple=True)
    return row, cand[row, col]
