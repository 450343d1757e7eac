"""The SO(2) convolution equals the Clebsch-Gordan tensor product with mapped weights."""
import pytest
import torch

from equiformer.nn import CGConvolution, SO2Convolution, layout, so2_from_cg
from equiformer.nn.edge_geometry import EdgeGeometry
from equiformer.nn.edge_layout import EdgeLayout
from equiformer.so3 import edge_to_axis_rotation, spherical_harmonics, wigner_D
from equiformer.testing import random_rotation


def _edges(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    vec = torch.randn(n, 3, dtype=torch.float64, generator=g)
    vec[5] = 0.0  # coincident nodes: no direction
    vec[6] = torch.tensor([0.0, 2.0, 0.0], dtype=torch.float64)  # exactly on a pole
    vec[7] = torch.tensor([0.0, -1.0, 1e-12], dtype=torch.float64)  # next to the other pole
    return vec


def _features(fiber, n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, layout(fiber).size, dtype=torch.float64, generator=g)


def _rotate(x, fiber, d, inverse=False):
    parts = [(d[l].transpose(-1, -2) if inverse else d[l]) @ t for l, t in enumerate(layout(fiber).split(x))]
    return layout(fiber).merge(parts)


SO2 = EdgeLayout.for_tensor_product("so2")


def _to_edge_layout(x, fiber):
    """Degree-major -> the layout the SO(2) convolution works in."""
    return x.index_select(1, SO2.positions(fiber))


def _from_edge_layout(x, fiber):
    return x.index_select(1, SO2.slots(fiber))


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("reflection", [False, True])
@pytest.mark.parametrize(
    "fibers",
    [((3, 2, 4, 1), (2, 3, 1, 2, 2)), ((4, 4), (2, 1, 3)), ((2, 2, 2), (5,)), ((3, 2, 2, 2), (4, 3, 3)), ((2, 3, 3), (1, 2, 2, 2))],
)
def test_so2_equals_cg_with_mapped_weights(fibers, reflection, dense):
    fiber_in, fiber_out = fibers
    torch.manual_seed(1)
    cg = CGConvolution(fiber_in, fiber_out, reflection=reflection).double()
    so2 = so2_from_cg(cg).double()
    so2.dense = dense
    vec = _edges()
    x = _features(fiber_in, vec.shape[0], 2)
    scale = torch.randn(vec.shape[0], sum(fiber_in), dtype=torch.float64)
    reference = cg(x, spherical_harmonics(cg.filter_lmax, vec), scale)
    d = wigner_D(max(len(fiber_in), len(fiber_out)) - 1, edge_to_axis_rotation(vec))
    zero = (vec.pow(2).sum(-1) == 0).nonzero().flatten()
    out = so2(_to_edge_layout(_rotate(x, fiber_in, d), fiber_in), scale, zero)
    out = _rotate(_from_edge_layout(out, fiber_out), fiber_out, d, inverse=True)
    assert (reference - out).abs().max() <= 1e-10
    assert reference.abs().max() > 1e-2


@pytest.mark.parametrize("reflection", [False, True])
def test_cg_convolution_is_equivariant(reflection):
    fiber_in, fiber_out = (2, 3, 2), (3, 2, 2)
    torch.manual_seed(0)
    cg = CGConvolution(fiber_in, fiber_out, reflection=reflection).double()
    vec = _edges()
    x = _features(fiber_in, vec.shape[0], 3)
    r = random_rotation(torch.float64, generator=torch.Generator().manual_seed(4))
    if reflection:
        r = -r
    d = wigner_D(cg.filter_lmax, r)
    out = cg(x, spherical_harmonics(cg.filter_lmax, vec))
    out_rot = cg(_rotate(x, fiber_in, d), spherical_harmonics(cg.filter_lmax, vec @ r.T))
    assert (_rotate(out, fiber_out, d) - out_rot).abs().max() <= 1e-12


def test_so2_parameter_count_matches_cg_paths():
    """Both parametrisations span the same space: one SO(2) weight per tensor-product path."""
    fiber_in, fiber_out = (3, 2, 4), (2, 3, 1)
    for reflection in (False, True):
        cg = CGConvolution(fiber_in, fiber_out, reflection=reflection)
        so2 = SO2Convolution(fiber_in, fiber_out, reflection=reflection)
        assert sum(p.numel() for p in cg.parameters()) == sum(p.numel() for p in so2.parameters())


def _geometry(vec, lmax):
    n = vec.shape[0]
    idx = torch.arange(n)
    return EdgeGeometry.build(
        vec, idx, idx, num_nodes=n, node_graph=torch.zeros(n, dtype=torch.long), num_graphs=1,
        weight=torch.ones(n, dtype=torch.float64), edge_attr=torch.zeros(n, 1, dtype=torch.float64),
        lmax=lmax, edge_layout=SO2,
    )


def _assert_rotates_like_per_degree_wigner(geometry, vec, fiber, seed=4):
    d = wigner_D(len(fiber) - 1, edge_to_axis_rotation(vec))
    x = _features(fiber, vec.shape[0], seed)
    expected = _to_edge_layout(_rotate(x, fiber, d), fiber) if len(fiber) > 1 else x
    rotated = geometry.rotate(x, fiber)
    assert (rotated - expected).abs().max() <= 1e-12
    assert (geometry.rotate(rotated, fiber, inverse=True) - x).abs().max() <= 1e-12
    if len(fiber) > 1:
        assert (rotated - x).abs().max() > 1e-3  # the frames really rotate


@pytest.mark.parametrize(
    "fiber",
    [(8, 4, 4, 4), (6, 4, 4), (8, 6, 4), (4, 3), (5,)],
    ids=["scalar-rows-folded", "order-major", "per-degree-runs", "one-higher-degree", "scalars-only"],
)
def test_edge_geometry_rotate_matches_per_degree_wigner(fiber):
    """EdgeGeometry.rotate (every code path it picks by fiber) equals rotating degree by degree
    and re-laying out; its inverse undoes it."""
    vec = _edges(32)
    _assert_rotates_like_per_degree_wigner(_geometry(vec, len(fiber) - 1), vec, fiber)


def test_edge_geometry_shares_rotation_blocks_between_fibers():
    """Fibers asking for more, then fewer identity rows (views of one cached matrix) on one
    geometry all rotate correctly."""
    vec = _edges(32)
    geometry = _geometry(vec, 3)
    for seed, fiber in enumerate([(8, 4, 4, 4), (16, 4, 4, 4), (8, 4, 4, 4), (6, 4, 4, 4), (4, 4, 4, 4)]):
        _assert_rotates_like_per_degree_wigner(geometry, vec, fiber, seed)
    assert len(geometry._blocks) == 1  # one matrix served every fiber
