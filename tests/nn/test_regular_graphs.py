"""Graphs where every node receives exactly k edges (k-nearest neighbours without padding) take
dense batched paths: receivers' features rotated without a gather, values rotated back and summed
in one product, the softmax on an (N, k, H) view.  They must equal the general scatter paths."""
from dataclasses import replace

import pytest
import torch

import equiformer.nn.edge_graph as edge_graph_module
from equiformer.nn import layout
from equiformer.nn.edge_geometry import EdgeGeometry
from equiformer.nn.edge_graph import uniform_in_degree
from equiformer.nn.edge_layout import EdgeLayout
from equiformer.nn.scatter import segment_softmax
from model_factory import assert_model_equivariant, make_inputs, make_model

N, K = 12, 4


def _regular_geometry(seed=0, lmax=3):
    g = torch.Generator().manual_seed(seed)
    dst = torch.arange(N).repeat_interleave(K)
    src = (dst + 1 + torch.randint(0, N - 1, (N * K,), generator=g)) % N  # never a self edge
    vec = torch.randn(N * K, 3, dtype=torch.float64, generator=g)
    vec[3] = 0.0  # coincident nodes: an edge without a direction
    geometry = EdgeGeometry.build(
        vec, dst, src, num_nodes=N, node_graph=torch.zeros(N, dtype=torch.long), num_graphs=1,
        weight=torch.rand(N * K, dtype=torch.float64, generator=g), edge_attr=torch.zeros(N * K, 1, dtype=torch.float64),
        lmax=lmax, edge_layout=EdgeLayout.for_tensor_product("so2"),
    )
    assert geometry.neighbors == K
    return geometry


def test_uniform_in_degree():
    dst = torch.arange(5).repeat_interleave(3)
    assert uniform_in_degree(dst, 5) == 3
    assert uniform_in_degree(dst, 6) is None  # a node without edges
    assert uniform_in_degree(dst[:-1], 5) is None  # one receiver short
    assert uniform_in_degree(dst.flip(0), 5) is None  # not stored receiver by receiver
    assert uniform_in_degree(torch.tensor([0, 0, 1, 2, 2, 2]), 3) is None  # same count, uneven
    assert uniform_in_degree(torch.zeros(0, dtype=torch.long), 0) is None


@pytest.mark.parametrize(
    "fibers, dense",
    [([(8, 4, 4, 4)], True), ([(6, 4, 4, 4)], False), ([(16, 4, 4, 4), (8, 4, 4, 4)], False), ([(8, 6, 4)], False)],
    ids=["folded", "not-folded", "view-of-a-larger-block", "per-degree-runs"],
)
def test_receiver_rotation_and_aggregation_equal_gather_and_scatter(fibers, dense):
    geometry = _regular_geometry(lmax=len(fibers[0]) - 1)
    general = replace(geometry, graph=replace(geometry.graph, neighbors=None))  # fresh cache too
    g = torch.Generator().manual_seed(1)
    for fiber in fibers:
        nodes = torch.randn(N, layout(fiber).size, dtype=torch.float64, generator=g)
        edges = torch.randn(N * K, layout(fiber).size, dtype=torch.float64, generator=g)
        rotated = geometry.rotate_receivers(nodes, fiber)
        expected = general.rotate(nodes.index_select(0, general.dst), fiber)
        assert (rotated - expected).abs().max() <= 1e-12
        for g_ in (geometry, general):  # with a summand folded into the product
            assert (g_.rotate_receivers(nodes, fiber, plus=edges) - (expected + edges)).abs().max() <= 1e-12
        summed = geometry.aggregate(edges, fiber)
        expected = torch.zeros(N, layout(fiber).size, dtype=torch.float64).index_add(
            0, general.dst, general.rotate(edges, fiber, inverse=True))
        assert (summed - expected).abs().max() <= 1e-12
    assert (geometry._dense_rotation(fibers[-1]) is not None) == dense


@pytest.mark.parametrize("with_self", [True, False], ids=["self", "null-key"])
def test_dense_softmax_equals_segment_softmax(with_self):
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(N * K, 3, dtype=torch.float64, generator=g) * 5
    weight = torch.rand(N * K, dtype=torch.float64, generator=g)
    weight[:K] = 0.0  # a receiver whose neighbours all faded out
    logits[K, 0], weight[K] = 1000.0, 0.0  # receiver 1: its peak faded out, the rest underflow
    self_logits = torch.randn(N, 3, dtype=torch.float64, generator=g) if with_self else None
    dst = torch.arange(N).repeat_interleave(K)
    dense = segment_softmax(logits, dst, N, weight, self_logits, neighbors=K)
    sparse = segment_softmax(logits, dst, N, weight, self_logits)
    assert torch.isfinite(dense[0]).all() and (dense[0] - sparse[0]).abs().max() <= 1e-14
    if with_self:
        assert (dense[1] - sparse[1]).abs().max() <= 1e-14
        total = dense[0].view(N, K, 3).sum(1) + dense[1]
    else:
        assert dense[1] is None
        total = dense[0].view(N, K, 3).sum(1)
        assert (total[0] == 0).all()  # faded neighbours leave everything to the null key
    assert (total <= 1 + 1e-12).all()


def _run(model, feats, coors, mask, regular: bool, monkeypatch):
    seen = []

    def spy(dst, num_nodes):
        k = uniform_in_degree(dst, num_nodes) if regular else None
        seen.append(k)
        return k

    monkeypatch.setattr(edge_graph_module, "uniform_in_degree", spy)
    coors = coors.clone().requires_grad_()
    out = model(feats, coors, mask)
    loss = sum((t * t).sum() for t in out.degrees.values())
    grads = torch.autograd.grad(loss, [coors, *model.parameters()], allow_unused=True)
    return out, grads, seen


@pytest.mark.parametrize(
    "overrides",
    [
        dict(l2_dist_attention=True, attend_self=True),
        dict(l2_dist_attention=True, attend_self=False, single_headed_kv=True),
        dict(l2_dist_attention=False, attend_self=True),
        dict(l2_dist_attention=False, attend_self=False, reversible=True),
    ],
    ids=["l2-self", "l2-single-kv", "mlp-self", "mlp-reversible"],
)
def test_model_on_a_regular_graph_equals_the_general_path_and_is_equivariant(overrides, monkeypatch):
    """Folded fibers (C_0 a multiple of the shared l > 0 channel count), so the dense products run."""
    model = make_model(dim=(8, 4, 4), heads=(2, 2, 2), dim_head=(4, 2, 2), valid_radius=float("inf"), num_neighbors=5,
                       **overrides)
    feats, coors, _ = make_inputs(model, b=2, n=10)
    mask = torch.ones(2, 10, dtype=torch.bool)
    out, grads, seen = _run(model, feats, coors, mask, True, monkeypatch)
    assert seen == [5]
    ref, ref_grads, seen = _run(model, feats, coors, mask, False, monkeypatch)
    assert seen == [None]
    for l, t in out.degrees.items():
        assert (t - ref.degrees[l]).abs().max() <= 1e-12 * max(1.0, ref.degrees[l].abs().max().item())
    for a, b in zip(grads, ref_grads):
        if b is not None:
            assert (a - b).abs().max() <= 1e-10 * max(1.0, b.abs().max().item())
    monkeypatch.undo()
    assert_model_equivariant(model, feats, coors, mask)
