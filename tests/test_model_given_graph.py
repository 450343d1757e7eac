"""Graphs from outside: ``forward_packed(neighbors=..., shifts=...)`` runs no search, takes the
listed edges (with periodic image shifts), and stays equivariant and differentiable."""
import itertools

import pytest
import torch

from equiformer.testing import random_rotation
from model_factory import chain_adjacency, make_model


def _own_edges(coors: torch.Tensor, graph_index: torch.Tensor, k: float, radius: float) -> torch.Tensor:
    """The model's own neighbour rule, written out exhaustively: up to ``k`` nearest other nodes
    of the same graph within ``radius``, as (2, E) pairs (receiver, sender)."""
    dist = torch.cdist(coors, coors)
    dist = dist.masked_fill(graph_index[:, None] != graph_index[None, :], float("inf"))
    dist.fill_diagonal_(float("inf"))
    pairs = []
    for i in range(coors.shape[0]):
        order = torch.argsort(dist[i])
        chosen = order[: int(min(k, coors.shape[0]))]
        chosen = chosen[dist[i, chosen] <= radius]
        pairs += [(i, int(j)) for j in chosen]
    return torch.tensor(pairs, dtype=torch.long).T


def _packed_inputs(model, sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    graph_index = torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes))
    feats = {0: torch.randn(n, model.dim_in[0], dtype=torch.float64, generator=g)}
    for l in range(1, model.input_degrees):
        feats[l] = torch.randn(n, model.dim_in[l], 2 * l + 1, dtype=torch.float64, generator=g)
    coors = torch.randn(n, 3, dtype=torch.float64, generator=g) * 1.3
    return feats, coors, graph_index


def _close(a, b, tol=1e-12):
    for x, y in zip(a.degrees.values(), b.degrees.values()):
        x, y = x.detach(), y.detach()
        assert (x - y).abs().max() <= tol * max(1.0, float(y.abs().max()))


@pytest.mark.parametrize("options", [
    dict(),
    dict(l2_dist_attention=False, tensor_product="cg"),
    dict(num_neighbors=float("inf"), valid_radius=2.0, reversible=True),
    dict(num_linear_attn_heads=1, edge_chunk_size=7),
])
def test_given_edges_equal_the_models_own_search(options):
    model = make_model(**options)
    feats, coors, graph_index = _packed_inputs(model, [9, 14, 5])
    own = model.forward_packed(feats, coors, graph_index)
    pairs = _own_edges(coors, graph_index, model.num_neighbors, model.valid_radius)
    given = model.forward_packed(feats, coors, graph_index, neighbors=pairs)
    _close(given, own)
    # the order of the listed edges does not matter
    perm = torch.randperm(pairs.shape[1], generator=torch.Generator().manual_seed(1))
    _close(model.forward_packed(feats, coors, graph_index, neighbors=pairs[:, perm]), own)
    # and a different edge list does give different outputs (the list is really used)
    other = model.forward_packed(feats, coors, graph_index, neighbors=pairs[:, : pairs.shape[1] // 2])
    assert (other.type0 - own.type0).abs().max() > 1e-6


def test_given_edges_with_adjacency_hops_and_edge_tokens():
    model = make_model(num_edge_tokens=3, edge_dim=2, attend_sparse_neighbors=True, num_adj_degrees_embed=2)
    sizes = [10, 8]
    feats, coors, graph_index = _packed_inputs(model, sizes, seed=2)
    starts = [0, sizes[0]]
    chain = torch.cat([chain_adjacency(s).nonzero().T + start for s, start in zip(sizes, starts)], dim=1)
    tokens = torch.randint(1, 3, (chain.shape[1],), generator=torch.Generator().manual_seed(0))
    kw = dict(adjacency=chain, edge_index=chain, edge_attr=tokens)
    own = model.forward_packed(feats, coors, graph_index, **kw)
    # the search's edges leave out adjacency pairs; listing them too changes nothing (counted once)
    pairs = _own_edges(coors, graph_index, float("inf"), model.valid_radius)
    knn = _own_edges(coors, graph_index, model.num_neighbors, model.valid_radius)
    assert pairs.shape[1] > knn.shape[1]
    from equiformer.graph import build_graph
    graph = build_graph(coors, None, num_neighbors=model.num_neighbors, valid_radius=model.valid_radius, max_hops=2,
                        adjacency=(chain[0], chain[1]), graph_index=graph_index)
    searched = torch.stack([graph.dst[graph.by_distance], graph.src[graph.by_distance]])
    _close(model.forward_packed(feats, coors, graph_index, neighbors=searched, **kw), own)
    with_bonds = torch.cat([searched, chain], dim=1)
    _close(model.forward_packed(feats, coors, graph_index, neighbors=with_bonds, **kw), own)


def _periodic_toy(seed=0):
    """Four atoms in a small triclinic cell; every image within ``cutoff`` listed with its shift
    (the cell is shorter than the cutoff, so atoms see their own images)."""
    g = torch.Generator().manual_seed(seed)
    cell = torch.tensor([[2.6, 0.0, 0.0], [0.4, 2.4, 0.0], [0.3, -0.2, 2.8]], dtype=torch.float64)
    frac = torch.rand(4, 3, dtype=torch.float64, generator=g)
    coors = frac @ cell
    cutoff = 3.0
    pairs, images = [], []
    for i, j in itertools.product(range(4), repeat=2):
        for s in itertools.product(range(-2, 3), repeat=3):
            if i == j and s == (0, 0, 0):
                continue
            shift = torch.tensor(s, dtype=torch.float64) @ cell
            if float((coors[j] - coors[i] + shift).norm()) <= cutoff:
                pairs.append((i, j))
                images.append(s)
    return coors, cell, torch.tensor(pairs).T, torch.tensor(images, dtype=torch.float64), cutoff


def test_periodic_toy_is_equivariant_and_its_forces_are_gradients():
    coors, cell, pairs, images, cutoff = _periodic_toy()
    assert (pairs[0] == pairs[1]).any()  # an atom's own images are neighbours
    model = make_model(num_neighbors=float("inf"), valid_radius=cutoff, dim_in=3)
    feats = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))

    def run(pos, cell_):
        return model.forward_packed(feats, pos, neighbors=pairs, shifts=images @ cell_)

    out = run(coors, cell)
    rot = random_rotation(torch.float64, None, torch.Generator().manual_seed(5))
    turned = run(coors @ rot.T, cell @ rot.T)
    assert (turned.type0 - out.type0).abs().max() <= 1e-10 * float(out.type0.abs().max())
    assert (turned.type1 - out.type1 @ rot.T).abs().max() <= 1e-10 * float(out.type1.abs().max())
    # translation, and wrapping an atom into another image (its shifts move with it)
    moved = run(coors + torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64), cell)
    assert (moved.type0 - out.type0).abs().max() <= 1e-10 * float(out.type0.abs().max())

    # forces: gradients of an energy with respect to positions and to the cell (through shifts)
    pos = coors.clone().requires_grad_(True)
    cell_ = cell.clone().requires_grad_(True)
    energy = run(pos, cell_).type0.sum()
    g_pos, g_cell = torch.autograd.grad(energy, (pos, cell_))
    h = 1e-5
    for grad, base, name in ((g_pos, coors, "coors"), (g_cell, cell, "cell")):
        numeric = torch.zeros_like(base)
        for idx in itertools.product(range(base.shape[0]), range(3)):
            plus, minus = base.clone(), base.clone()
            plus[idx] += h
            minus[idx] -= h
            args = (plus, cell) if name == "coors" else (coors, plus)
            args_m = (minus, cell) if name == "coors" else (coors, minus)
            numeric[idx] = (run(*args).type0.sum() - run(*args_m).type0.sum()) / (2 * h)
        assert (numeric - grad).abs().max() <= 1e-6 * max(1.0, float(grad.abs().max())), name
    assert g_cell.abs().max() > 0


def test_bad_neighbors_are_refused_by_name():
    model = make_model()
    feats, coors, graph_index = _packed_inputs(model, [4, 3])
    ok = torch.tensor([[0, 1], [1, 0]])
    cases = [
        (dict(neighbors=torch.tensor([[0, 9], [1, 0]])), ValueError, "neighbors refers to nodes outside"),
        (dict(neighbors=torch.tensor([[0], [5]])), ValueError, "neighbors links nodes of different graphs"),
        (dict(neighbors=torch.tensor([[2], [2]])), ValueError, "neighbors pairs node 2 with itself"),
        (dict(neighbors=torch.tensor([[2], [2]]), shifts=torch.zeros(1, 3, dtype=torch.float64)), ValueError, "with itself"),
        (dict(neighbors=torch.tensor([0, 1])), ValueError, r"neighbors must have shape \(2, P\)"),
        (dict(neighbors=ok.double()), TypeError, "neighbors must hold integer"),
        (dict(neighbors=ok, shifts=torch.zeros(3, 3, dtype=torch.float64)), ValueError, r"shifts must have shape \(E, 3\)"),
        (dict(neighbors=ok, shifts=torch.zeros(2, 3, dtype=torch.float32)), TypeError, "shifts must have the dtype of coors"),
        (dict(neighbors=ok, shifts=torch.full((2, 3), float("nan"), dtype=torch.float64)), ValueError, "shifts must be finite"),
        (dict(shifts=torch.zeros(2, 3, dtype=torch.float64)), ValueError, "shifts were given without neighbors"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            model.forward_packed(feats, coors, graph_index, **kwargs)
    # a self pair with a nonzero shift (a periodic image) is an edge like any other
    out = model.forward_packed(feats, coors, graph_index, neighbors=torch.tensor([[2], [2]]),
                               shifts=torch.tensor([[0.0, 0.0, 1.5]], dtype=torch.float64))
    assert torch.isfinite(out.type1).all()
