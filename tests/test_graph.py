import itertools
from collections import deque

import torch

from equiformer.graph import INF, build_graph, cap_neighbors, expand_hops, knn_edges
from model_factory import chain_adjacency


def _brute_knn(pos, mask, k, radius):
    b, n, _ = pos.shape
    out = set()
    for bi in range(b):
        for i in range(n):
            if not mask[bi, i]:
                continue
            cands = [(torch.dist(pos[bi, i], pos[bi, j]).item(), j) for j in range(n) if j != i and mask[bi, j]]
            cands = sorted(c for c in cands if c[0] <= radius)[: (None if k == INF else k)]
            out |= {(bi * n + i, bi * n + j) for _, j in cands}
    return out


def test_knn_matches_brute_force_with_mask_and_radius():
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(3, 25, 3, generator=g, dtype=torch.float64)
    mask = torch.rand(3, 25, generator=g) > 0.2
    for k, radius in [(4, INF), (6, 1.2), (INF, 1.5), (INF, INF)]:
        dst, src = knn_edges(pos, mask, k, radius)
        assert set(zip(dst.tolist(), src.tolist())) == _brute_knn(pos, mask, k, radius)


def test_chunking_gives_the_same_edges():
    pos = torch.randn(2, 40, 3)
    mask = torch.ones(2, 40, dtype=torch.bool)
    a = knn_edges(pos, mask, 5, INF)
    b = knn_edges(pos, mask, 5, INF, chunk_elements=64)  # 1 row per chunk
    assert set(zip(*map(torch.Tensor.tolist, a))) == set(zip(*map(torch.Tensor.tolist, b)))


def _bfs_hops(edges, n, max_hops):
    adj = {i: [] for i in range(n)}
    for d, s in edges:
        adj[d].append(s)
    out = {}
    for start in range(n):
        seen, queue = {start: 0}, deque([start])
        while queue:
            u = queue.popleft()
            if seen[u] == max_hops:
                continue
            for v in adj[u]:
                if v not in seen:
                    seen[v] = seen[u] + 1
                    queue.append(v)
        out.update({(start, v): h for v, h in seen.items() if v != start})
    return out


def test_hops_match_breadth_first_search():
    g = torch.Generator().manual_seed(1)
    n = 30
    a = torch.rand(n, n, generator=g) < 0.07
    a = a | a.T
    a.fill_diagonal_(False)
    dst, src = a.nonzero(as_tuple=True)
    for max_hops in (1, 2, 3, 5):
        d, s, h = expand_hops(dst, src, n, max_hops)
        got = dict(zip(zip(d.tolist(), s.tolist()), h.tolist()))
        assert got == _bfs_hops(list(zip(dst.tolist(), src.tolist())), n, max_hops)


def test_cap_keeps_bonds_first_and_is_seeded():
    dst = torch.tensor([0] * 6 + [1] * 2)
    hop = torch.tensor([2, 1, 2, 1, 2, 1, 1, 2])
    torch.manual_seed(0)
    keep_a = cap_neighbors(dst, hop, 4)
    torch.manual_seed(0)
    keep_b = cap_neighbors(dst, hop, 4)
    assert torch.equal(keep_a, keep_b)
    assert keep_a[:6].sum() == 4 and keep_a[6:].all()
    assert keep_a[[1, 3, 5]].all()  # all direct bonds of node 0 survive


def test_adjacency_plus_nearest_neighbours():
    g = torch.Generator().manual_seed(2)
    pos = torch.randn(1, 12, 3, generator=g)
    mask = torch.ones(1, 12, dtype=torch.bool)
    adj = chain_adjacency(12)[None]
    graph = build_graph(pos, mask, num_neighbors=2, adj_mat=adj, max_hops=2)
    pairs = set(zip(graph.dst.tolist(), graph.src.tolist()))
    bonded = {(int(a), int(b)) for a, b in zip(*adj[0].nonzero(as_tuple=True))}
    assert bonded <= pairs  # every bond kept
    hops = dict(zip(zip(graph.dst.tolist(), graph.src.tolist()), graph.hop.tolist()))
    assert all(hops[p] == 1 for p in bonded)
    assert all(hops[p] in (0, 2) for p in pairs - bonded)
    # each node also fetched its two nearest nodes that are not within two hops
    extra = {p for p in pairs if hops[p] == 0}
    per_node = torch.bincount(torch.tensor([d for d, _ in extra]), minlength=12)
    assert (per_node == 2).all()
    assert not graph.by_distance[graph.hop > 0].any()


def test_hop_labels_without_adjacency_edges():
    pos = torch.arange(10.0)[None, :, None].expand(1, 10, 3).contiguous()
    mask = torch.ones(1, 10, dtype=torch.bool)
    adj = chain_adjacency(10)
    graph = build_graph(pos, mask, num_neighbors=4, adj_mat=adj[None], max_hops=3, adjacency_edges=False)
    for d, s, h in zip(graph.dst.tolist(), graph.src.tolist(), graph.hop.tolist()):
        assert h == (abs(d - s) if abs(d - s) <= 3 else 0)


def test_no_self_loops_and_no_padding():
    pos = torch.randn(2, 9, 3)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 5:] = False
    adj = torch.ones(2, 9, 9, dtype=torch.bool)
    graph = build_graph(pos, mask, num_neighbors=3, adj_mat=adj, max_hops=2, max_sparse_neighbors=3)
    assert (graph.dst != graph.src).all()
    flat_mask = mask.reshape(-1)
    assert flat_mask[graph.dst].all() and flat_mask[graph.src].all()
    assert all(d // 9 == s // 9 for d, s in itertools.islice(zip(graph.dst.tolist(), graph.src.tolist()), None))


def test_grid_search_equals_exhaustive_search():
    from equiformer.graph import brute_knn_edges, grid_knn_edges

    g = torch.Generator().manual_seed(5)
    for k, radius in [(12, INF), (6, 2.0)]:
        pos = torch.rand(2, 1500, 3, generator=g, dtype=torch.float64) * 20
        pos[0, :30] *= 8  # a sparse halo: those nodes take the exhaustive fallback
        pos[1, 100] = pos[1, 101]  # coincident nodes
        mask = torch.rand(2, 1500, generator=g) > 0.1
        exclude = (torch.arange(0, 200), torch.arange(1, 201))
        a = grid_knn_edges(pos, mask, k, radius, exclude)
        b = brute_knn_edges(pos, mask, k, radius, exclude)
        assert set(zip(*map(torch.Tensor.tolist, a))) == set(zip(*map(torch.Tensor.tolist, b)))
        assert a[0].numel() > 0
