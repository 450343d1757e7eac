"""One owner of the per-edge layout (``EdgeLayout``) and a geometry complete when constructed
(``EdgeGraph`` + ``EdgeGeometry``): the names are checked in one place, every layer of a model
holds the model's layout, and the geometry takes everything at construction."""
import dataclasses

import pytest
import torch

from equiformer.nn import layout
from equiformer.nn.edge_chunks import receiver_chunks
from equiformer.nn.edge_convolution import EdgeConvolution
from equiformer.nn.edge_geometry import EdgeGeometry
from equiformer.nn.edge_graph import EdgeGraph
from equiformer.nn.edge_layout import TENSOR_PRODUCTS, EdgeLayout
from model_factory import make_model


def test_unknown_tensor_product_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"tensor_product must be one of \('so2', 'cg'\), got 'fft'"):
        EdgeLayout.for_tensor_product("fft")
    assert TENSOR_PRODUCTS == ("so2", "cg")


@pytest.mark.parametrize(
    "tensor_product, fiber, order_major",
    [("so2", (8, 4, 4), True), ("so2", (6, 4, 4, 4), True), ("so2", (8, 6, 4), False), ("so2", (5,), True),
     ("cg", (8, 4, 4), False), ("cg", (8, 6, 4), False)],
)
def test_positions_and_slots_are_inverse_permutations(tensor_product, fiber, order_major):
    edge_layout = EdgeLayout.for_tensor_product(tensor_product)
    assert edge_layout.order_major(fiber) == order_major
    positions, slots = edge_layout.positions(fiber), edge_layout.slots(fiber)
    size = layout(fiber).size
    assert positions.device.type == slots.device.type == "cpu"
    assert torch.equal(positions[slots], torch.arange(size)) and torch.equal(slots[positions], torch.arange(size))
    assert torch.equal(positions, layout(fiber).order_index if order_major else torch.arange(size))
    positions[0] = -1  # a fresh tensor: the memoised layout is untouched
    assert int(edge_layout.positions(fiber)[0]) >= 0


@pytest.mark.parametrize("fiber", [(8, 4, 4, 4), (6, 4, 4, 4), (8, 6, 4, 4), (3, 2, 2)])
@pytest.mark.parametrize("mmax", [0, 1, 2])
def test_truncated_layout_keeps_exactly_the_low_orders(fiber, mmax):
    edge_layout = EdgeLayout.for_tensor_product("so2", mmax=mmax, lmax=len(fiber) - 1)
    lay = layout(fiber)
    positions, slots = edge_layout.positions(fiber), edge_layout.slots(fiber)
    keep = lay.abs_order_index <= mmax  # (F,) degree-major positions with |m| <= mmax
    assert edge_layout.truncates(fiber) == (mmax < len(fiber) - 1)
    assert edge_layout.width(fiber) == len(positions) == int(keep.sum())
    assert torch.equal(positions.sort().values, keep.nonzero().flatten())  # each kept position once
    assert torch.equal(slots[positions], torch.arange(len(positions)))
    assert bool((slots[~keep] == -1).all())
    if edge_layout.order_major(fiber):  # a prefix of the untruncated order-major layout
        assert torch.equal(positions, lay.order_index[: len(positions)])
    else:  # degree-major order
        assert bool((positions.diff() > 0).all())


def test_mmax_is_checked_and_dropped_where_it_truncates_nothing():
    with pytest.raises(ValueError, match=r"mmax must be None or an integer >= 0, got -1"):
        EdgeLayout.for_tensor_product("so2", mmax=-1)
    with pytest.raises(ValueError, match=r"mmax=1 needs tensor_product='so2'.*got tensor_product='cg'"):
        EdgeLayout.for_tensor_product("cg", mmax=1, lmax=2)
    assert EdgeLayout.for_tensor_product("cg", mmax=2, lmax=2) == EdgeLayout.for_tensor_product("cg")
    assert EdgeLayout.for_tensor_product("so2", mmax=1, lmax=2).mmax == 1


@pytest.mark.parametrize("fiber", [(8, 4, 4, 4), (6, 4, 4, 4), (8, 6, 4, 4)])
def test_truncated_rotation_is_the_full_rotation_restricted(fiber):
    """rotate() with mmax gives the kept slots of the full rotation, and its inverse the full
    inverse of those slots with zeros elsewhere (a transpose: the frames are orthogonal)."""
    torch.manual_seed(0)
    edges, lmax = 11, len(fiber) - 1
    vec = torch.randn(edges, 3, dtype=torch.float64)
    idx = torch.arange(edges)
    full_layout = EdgeLayout.for_tensor_product("so2")
    cut_layout = EdgeLayout.for_tensor_product("so2", mmax=1, lmax=lmax)

    def geometry(edge_layout):
        ones = torch.ones(edges, dtype=torch.float64)
        return EdgeGeometry.build(vec, idx, idx, edges, idx, 1, ones, ones[:, None], lmax, edge_layout)

    x = torch.randn(edges, layout(fiber).size, dtype=torch.float64)
    full, cut = geometry(full_layout).rotate(x, fiber), geometry(cut_layout).rotate(x, fiber)
    full_degree = full.index_select(1, full_layout.slots(fiber))  # edge frame, degree-major
    assert torch.allclose(cut, full_degree.index_select(1, cut_layout.positions(fiber)), atol=1e-13)
    back = geometry(cut_layout).rotate(cut, fiber, inverse=True)
    kept_only = torch.zeros_like(full_degree).index_copy(1, cut_layout.positions(fiber), cut)
    expected = geometry(full_layout).rotate(kept_only.index_select(1, full_layout.positions(fiber)), fiber, inverse=True)
    assert torch.allclose(back, expected, atol=1e-13)


@pytest.mark.parametrize("tensor_product", TENSOR_PRODUCTS)
def test_every_edge_layer_of_a_model_holds_the_models_layout(tensor_product):
    model = make_model(tensor_product=tensor_product, reflection_equivariance=True, l2_dist_attention=False)
    assert model.edge_layout == EdgeLayout.for_tensor_product(tensor_product, reflection=True)
    convs = [m for m in model.modules() if isinstance(m, EdgeConvolution)]
    assert convs and all(c.edge_layout is model.edge_layout for c in convs)
    assert all(c.inner.reflection for c in convs)


def _geometry(chunk=None):
    g = torch.Generator().manual_seed(0)
    n = 6
    dst = torch.arange(n).repeat_interleave(3)
    src = (dst + 1 + torch.randint(0, n - 1, (3 * n,), generator=g)) % n
    vec = torch.randn(3 * n, 3, dtype=torch.float64, generator=g)
    return EdgeGeometry.build(
        vec, dst, src, num_nodes=n, node_graph=torch.zeros(n, dtype=torch.long), num_graphs=1,
        weight=torch.rand(3 * n, dtype=torch.float64, generator=g), edge_attr=torch.zeros(3 * n, 1, dtype=torch.float64),
        lmax=2, edge_layout=EdgeLayout.for_tensor_product("so2"), edge_chunk_size=chunk,
    )


def test_geometry_is_complete_when_built_and_immutable():
    geometry = _geometry(chunk=4)
    assert isinstance(geometry.graph, EdgeGraph)
    assert geometry.graph.edge_chunk_size == 4 and geometry.chunked and geometry.neighbors == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        geometry.graph.edge_chunk_size = None
    with pytest.raises(dataclasses.FrozenInstanceError):
        geometry.weight = geometry.weight * 2
    assert not _geometry().chunked


def test_copies_share_the_graph_and_its_chunks_but_not_the_rotation_cache():
    geometry = _geometry(chunk=4)
    fiber = (4, 4, 4)
    geometry.rotate(torch.zeros(geometry.num_edges, layout(fiber).size, dtype=torch.float64), fiber)
    assert geometry._blocks
    copy = geometry.with_float_tensors(geometry.float_tensors())
    assert copy.graph is geometry.graph and not copy._blocks
    assert copy.graph.chunk_bounds is geometry.graph.chunk_bounds  # cut once per graph
    assert all(not chunk._blocks and not chunk.chunked for _, chunk in receiver_chunks(geometry))
