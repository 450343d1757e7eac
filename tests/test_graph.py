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


def test_radius_alone_is_searched_on_a_grid_with_the_exhaustive_edges(monkeypatch):
    """``num_neighbors=inf`` with a finite radius on a large sparse graph: one grid of radius-wide
    cells (was exhaustive, O(n^2) time), every neighbour within the radius, no more."""
    import equiformer.graph.knn as knn_module
    from equiformer.graph import brute_knn_edges, grid_knn_edges
    from equiformer.graph.grid import grid_search

    g = torch.Generator().manual_seed(3)
    pos = torch.rand(2, 2500, 3, generator=g, dtype=torch.float64) * 60
    pos[0, :20] *= 5  # a sparse halo
    pos[1, 7] = pos[1, 8]  # coincident nodes
    mask = torch.rand(2, 2500, generator=g) > 0.1
    edges = lambda pair: set(zip(*map(torch.Tensor.tolist, pair)))  # noqa: E731
    b = brute_knn_edges(pos, mask, INF, 4.0)
    assert edges(grid_knn_edges(pos, mask, INF, 4.0)) == edges(b) and b[0].numel() > 2 * 2500
    exclude = (b[0][::7], b[1][::7])  # pairs that are within the radius
    excluded = brute_knn_edges(pos, mask, INF, 4.0, exclude)
    assert edges(grid_knn_edges(pos, mask, INF, 4.0, exclude)) == edges(excluded) == edges(b) - edges(exclude)
    used = []
    monkeypatch.setattr(knn_module, "grid_search", lambda *args: used.append(args[2].num_neighbors) or grid_search(*args))
    found = knn_edges(pos, mask, INF, 4.0)
    assert used == [INF] and edges(found) == edges(b)
    used.clear()
    knn_edges(pos, mask, INF, 100.0)  # a radius spanning the graph: every cell would hold it all
    assert used == []


def test_grid_search_with_a_hub_bonded_to_many_nodes():
    """A hub (a virtual node, a metal) excluded from 300 nodes' searches: still the exhaustive
    search's edges, and the other nodes do not look for k + 300 candidates each (the k-nearest
    selections stay O(n k), not O(n * hub degree))."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from equiformer.graph import brute_knn_edges, grid_knn_edges

    class SelectedElements(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func.overloadpacket in (torch.ops.aten.topk, torch.ops.aten.sort):
                SelectedElements.total += out[0].numel()
            return out

    n, k, hub = 3000, 8, 300
    pos = torch.rand(1, n, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 30
    mask = torch.ones(1, n, dtype=torch.bool)
    chain = torch.arange(n - 1)
    leaves = torch.arange(1, hub + 1) * 7
    dst = torch.cat([chain, chain + 1, torch.zeros(hub, dtype=torch.long), leaves])
    src = torch.cat([chain + 1, chain, leaves, torch.zeros(hub, dtype=torch.long)])
    with SelectedElements():
        a = grid_knn_edges(pos, mask, k, INF, (dst, src))
    b = brute_knn_edges(pos, mask, k, INF, (dst, src))
    assert set(zip(*map(torch.Tensor.tolist, a))) == set(zip(*map(torch.Tensor.tolist, b)))
    assert a[0].numel() == n * k
    assert SelectedElements.total < 20 * n * (k + 3), SelectedElements.total  # was ~ n (k + hub)


def test_grid_search_on_a_dense_core_in_a_sparse_cloud():
    """A Gaussian cloud: cell occupancy from 1 to dozens; still the exhaustive search's edges."""
    from equiformer.graph import brute_knn_edges, grid_knn_edges

    g = torch.Generator().manual_seed(8)
    pos = torch.randn(1, 3000, 3, generator=g, dtype=torch.float64) * 8
    mask = torch.ones(1, 3000, dtype=torch.bool)
    a = grid_knn_edges(pos, mask, 16, INF)
    b = brute_knn_edges(pos, mask, 16, INF)
    assert set(zip(*map(torch.Tensor.tolist, a))) == set(zip(*map(torch.Tensor.tolist, b)))


def test_cell_chunks_pad_within_a_factor_of_two_per_side():
    from equiformer.graph.grid import _cell_chunks

    g = torch.Generator().manual_seed(9)
    occupancy = torch.randint(1, 60, (500,), generator=g)
    reach = occupancy + torch.randint(0, 60, (500,), generator=g)
    chunks = _cell_chunks(occupancy, reach, chunk_elements=20_000)
    covered = torch.cat([cells for cells, _, _ in chunks])
    assert sorted(covered.tolist()) == list(range(500))  # every cell exactly once
    for cells, w_q, w_c in chunks:
        assert w_q >= occupancy[cells].max() and w_c >= reach[cells].max()  # pads, never truncates
        assert w_q <= 2 * occupancy[cells].min() and w_c <= 2 * reach[cells].min()
        assert cells.numel() == 1 or cells.numel() * w_q * 27 * w_c <= 20_000
    assert len(chunks) > 10


def _skewed_batch(sizes, n, generator):
    """Graphs of the given sizes in a (B, n) batch, real nodes at random positions of each row."""
    pos = torch.rand(len(sizes), n, 3, generator=generator, dtype=torch.float64) * 12
    mask = torch.zeros(len(sizes), n, dtype=torch.bool)
    for b, size in enumerate(sizes):
        mask[b, torch.randperm(n, generator=generator)[:size]] = True
    return pos, mask


def test_size_grouped_search_equals_padded_search(monkeypatch):
    import equiformer.graph.knn as knn_module

    g = torch.Generator().manual_seed(7)
    pos, mask = _skewed_batch([300, 1, 0, 7, 16, 9, 40, 3] + [5] * 40, 320, g)
    flat = (torch.arange(mask.shape[0])[:, None] * 320 + torch.arange(320))[mask]  # real padded-flat ids
    exclude = (flat[:-1:3], flat[1::3])  # consecutive real nodes, kept only within a graph below
    same_graph = exclude[0] // 320 == exclude[1] // 320
    exclude = (exclude[0][same_graph], exclude[1][same_graph])
    widths = []
    padded_search = knn_module.padded_search

    def recording(pos, *args):
        widths.append(pos.shape[1])
        return padded_search(pos, *args)

    monkeypatch.setattr(knn_module, "padded_search", recording)
    assert knn_module.size_groups(mask.sum(1), padded_width=320) is not None
    for k, radius, ex in [(4, INF, None), (6, 3.0, exclude), (INF, 2.5, None), (INF, INF, exclude)]:
        widths.clear()
        grouped = knn_edges(pos, mask, k, radius, ex)
        # groups by ceil(log2(size)): {1}, {3}, {5, 7}, {9, 16}, {40}, {300}, each padded to its largest
        assert sorted(widths) == [1, 3, 7, 16, 40, 300]
        plain = knn_edges(pos, mask, k, radius, ex, by_size=False)
        assert set(zip(*map(torch.Tensor.tolist, grouped))) == set(zip(*map(torch.Tensor.tolist, plain)))
        assert grouped[0].numel() > 0


def test_size_grouped_search_with_a_grid_sized_graph():
    g = torch.Generator().manual_seed(8)
    pos, mask = _skewed_batch([2100] + [12] * 30, 2100, g)
    exclude = (torch.tensor([0, 1, 2100 * 5]), torch.tensor([1, 2, 2100 * 5 + 0]))  # one pointless self pair
    exclude = (exclude[0][mask.flatten()[exclude[0]]], exclude[1][mask.flatten()[exclude[0]]])
    for k, radius in [(8, INF), (5, 1.0)]:
        grouped = knn_edges(pos, mask, k, radius, exclude)
        plain = knn_edges(pos, mask, k, radius, exclude, by_size=False)
        assert set(zip(*map(torch.Tensor.tolist, grouped))) == set(zip(*map(torch.Tensor.tolist, plain)))


def test_size_groups_only_when_padding_dominates():
    from equiformer.graph import size_groups

    assert size_groups(torch.tensor([50, 50, 50, 50]), padded_width=50) is None  # one group, nothing to gain
    assert size_groups(torch.tensor([0, 0, 0]), padded_width=10) is None  # no real nodes
    groups = size_groups(torch.tensor([50, 5, 5, 5]), padded_width=50)
    assert [g.tolist() for g in groups] == [[1, 2, 3], [0]]
    assert [g.tolist() for g in size_groups(torch.tensor([3, 0, 4, 1]))] == [[3], [0, 2]]  # always, without a padded width


def test_packed_search_equals_padded_search_in_any_node_order():
    from equiformer.graph import packed_knn_edges

    g = torch.Generator().manual_seed(9)
    pos, mask = _skewed_batch([90, 1, 4, 0, 13, 6, 6], 90, g)
    flat = (torch.arange(mask.shape[0])[:, None] * 90 + torch.arange(90))[mask]  # padded-flat id of each real node
    order = torch.randperm(flat.numel(), generator=g)  # packed nodes interleave the graphs
    flat = flat[order]
    packed_pos, graph_index = pos.reshape(-1, 3)[flat], flat // 90
    exclude_packed = (torch.arange(0, 40), torch.arange(1, 41))
    same = graph_index[exclude_packed[0]] == graph_index[exclude_packed[1]]
    exclude_packed = (exclude_packed[0][same], exclude_packed[1][same])
    for k, radius, use_exclude in [(5, INF, False), (3, 2.0, True), (INF, 3.0, True)]:
        ex = exclude_packed if use_exclude else None
        dst, src = packed_knn_edges(packed_pos, graph_index, k, radius, ex)
        ex_flat = (flat[ex[0]], flat[ex[1]]) if use_exclude else None
        reference = knn_edges(pos, mask, k, radius, ex_flat, by_size=False)
        assert set(zip(flat[dst].tolist(), flat[src].tolist())) == set(zip(*map(torch.Tensor.tolist, reference)))
        assert dst.numel() > 0


def _edge_set(edges):
    return set(zip(*map(torch.Tensor.tolist, edges)))


def _lattice(side: int, dtype=torch.float64) -> torch.Tensor:
    """Points of an integer lattice: many exactly equal neighbour distances."""
    axis = torch.arange(float(side), dtype=dtype)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(1, -1, 3)


def test_ties_are_broken_by_position_so_padding_does_not_change_the_edges():
    """Among equally distant candidates the one earlier in its graph wins, whatever the padded
    width, holes in the mask or search path (topk's choice among ties depended on them)."""
    pos = _lattice(3)  # 27 nodes
    n = pos.shape[1]
    for k in (1, 4, 7):
        plain = _edge_set(knn_edges(pos, torch.ones(1, n, dtype=torch.bool), k, INF))
        for pad, hole in [(3, None), (5, 0), (5, 13), (40, 26)]:
            width = n + pad
            real = torch.ones(width, dtype=torch.bool)
            real[n:] = False
            if hole is not None:  # move the padding slot in front of node `hole`
                real = torch.cat([real[:hole], torch.tensor([False]), real[hole : width - 1]])
            padded = torch.zeros(1, width, 3, dtype=pos.dtype)
            padded[0, real] = pos[0]
            rank = torch.full((width,), -1)
            rank[real] = torch.arange(n)
            dst, src = knn_edges(padded, real[None], k, INF, by_size=False)
            assert {(rank[d].item(), rank[s].item()) for d, s in zip(dst.tolist(), src.tolist())} == plain, (k, pad, hole)
        # and the lowest positions win: the centre (13) has 6 nodes at distance 1, then 12 at sqrt(2)
        by_distance_then_position = [4, 10, 12, 14, 16, 22] + [1, 3, 5, 7, 9, 11, 15, 17, 19, 21, 23, 25]
        assert sorted(s for d, s in plain if d == 13) == sorted(by_distance_then_position[:k])


def test_grid_search_breaks_ties_like_the_exhaustive_search():
    from equiformer.graph import brute_knn_edges, grid_knn_edges

    pos = _lattice(13)[:, :2100]  # grid-sized, every distance tied many times
    mask = torch.ones(1, pos.shape[1], dtype=torch.bool)
    mask[0, 500:520] = False
    exclude = (torch.arange(0, 300), torch.arange(1, 301))
    for k in (1, 5, 8):
        for ex in (None, exclude):
            assert _edge_set(grid_knn_edges(pos, mask, k, INF, ex)) == _edge_set(brute_knn_edges(pos, mask, k, INF, ex)), (k, ex is None)


def test_grid_cells_are_exact_for_float32_graphs_with_far_outliers():
    """Cell indices of a float32 graph spanning 1e5 with 0.01 spacing: rounding in the input
    dtype put points up to 2 cells off, and true neighbours were missed."""
    from equiformer.graph import brute_knn_edges

    g = torch.Generator().manual_seed(23)
    n, k = 2048, 6
    pos = torch.rand(1, n, 3, generator=g, dtype=torch.float64) * 0.1
    pos[0, :40] = torch.randn(40, 3, generator=g, dtype=torch.float64) * 1e5
    pos, mask = pos.float(), torch.ones(1, n, dtype=torch.bool)
    flat = pos[0].double()

    def kth(edges):
        d, s = edges
        return torch.zeros(n, dtype=torch.float64).scatter_reduce(0, d, (flat[s] - flat[d]).norm(dim=-1), "amax")

    excess = kth(knn_edges(pos, mask, k, INF)) - kth(brute_knn_edges(pos, mask, k, INF))
    assert excess[40:].max() < 1e-6


def test_huge_finite_num_neighbors_is_all_neighbours():
    """A k above the graph size is every neighbour, on any graph size (it overflowed an int64
    comparison on grid-sized graphs, and took ~10x the memory of k = inf)."""
    g = torch.Generator().manual_seed(3)
    pos = torch.rand(1, 2100, 3, generator=g, dtype=torch.float64) * 10
    mask = torch.ones(1, 2100, dtype=torch.bool)
    every = _edge_set(knn_edges(pos, mask, INF, 0.6))
    for k in (1e300, 10**20, 2099):
        assert _edge_set(knn_edges(pos, mask, k, 0.6)) == every


def _edge_set(pair):
    return set(zip(*map(torch.Tensor.tolist, pair)))


def test_grid_ranks_and_cuts_with_the_exhaustive_search_distances():
    """float64: the exclusion path's final ranking and the fallback rows of several graphs used
    ``vector_norm``, which rounds differently from ``cdist`` in the last bit; a near tie then went
    to another node and an edge at exactly the radius was dropped."""
    from equiformer.graph import brute_knn_edges

    dt = torch.float64
    n = 2048
    u = torch.tensor([0.4349647413157628, 1.4338749627661576, 0.06934165389187699], dtype=dt)
    w = torch.tensor([-1.1458649644597436, -0.22446863099115644, 0.9415982778895815], dtype=dt)
    far = torch.stack(torch.meshgrid(*[torch.arange(13, dtype=dt)] * 3, indexing="ij"), -1).reshape(-1, 3) * 100 + 1000
    pos = torch.cat([torch.zeros(1, 3, dtype=dt), u[None], w[None], far[: n - 3]])[None]
    mask = torch.ones(1, n, dtype=torch.bool)
    exclude = (torch.tensor([0]), torch.tensor([n - 1]))  # takes the exclusion path
    assert _edge_set(knn_edges(pos, mask, 1, INF, exclude)) == _edge_set(brute_knn_edges(pos, mask, 1, INF, exclude))


def test_grid_cell_keys_never_alias_other_graphs():
    """Two graphs 4.2e6 radii wide: int64 cell keys wrapped around and linked every node to the
    other graph's (4,096 cross-graph edges where there are none)."""
    from equiformer.graph import brute_knn_edges, grid_knn_edges

    n, side = 2048, 2.0**22 - 2.5
    pts = torch.rand(n, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * side
    pts[0], pts[1] = 0.0, side
    pos = pts[None].repeat(2, 1, 1)
    pos[1] += 0.5
    mask = torch.ones(2, n, dtype=torch.bool)
    reference = _edge_set(brute_knn_edges(pos, mask, INF, 1.0))
    for k in (INF, 4):
        found = grid_knn_edges(pos, mask, k, 1.0)
        assert _edge_set(found) == reference and bool((found[0] // n == found[1] // n).all())


def test_grid_fallback_rows_of_several_graphs_keep_edges_at_the_radius():
    """Halo rows of two graphs searched exhaustively together: a pair exactly at the radius (as
    the exhaustive search measures it) must stay."""
    from equiformer.graph import brute_knn_edges

    dt, n = torch.float64, 2048
    g = torch.Generator().manual_seed(0)
    centre = torch.tensor([50.0, 50.0, 50.0], dtype=dt)
    for _ in range(100000):  # a partner whose vector_norm distance rounds above its cdist one
        u = torch.randn(3, generator=g, dtype=dt)
        partner = centre + u / u.norm() * 1.5
        radius = torch.cdist(centre[None], partner[None], compute_mode="donot_use_mm_for_euclid_dist").item()
        if torch.linalg.vector_norm(partner - centre).item() > radius:
            break
    core = torch.stack(torch.meshgrid(torch.arange(12), torch.arange(12), torch.arange(13), indexing="ij"), -1).reshape(-1, 3).to(dt) * 1e-3
    lone = torch.tensor([[-50.0, -50, -50], [80, -50, 20], [-50, 80, 20]], dtype=dt)
    graph = torch.cat([core, centre[None], partner[None], lone])
    pos = torch.cat([graph, torch.zeros(n - graph.shape[0], 3, dtype=dt)])[None].repeat(2, 1, 1)
    mask = torch.zeros(2, n, dtype=torch.bool)
    mask[:, : graph.shape[0]] = True
    found = _edge_set(knn_edges(pos, mask, 4, radius, by_size=False))
    assert found == _edge_set(brute_knn_edges(pos, mask, 4, radius))
