"""Odd structures that real data contains: finite outputs, finite gradients (coordinates and
parameters) and exact equivariance (float64, relative 1e-9), for both attention types, both
tensor-product paths, and mirrors for the E(3) model.

Neighbour counts are unlimited here: with a finite ``num_neighbors`` a point set with tied
distances (a lattice, equally spaced collinear points) has no rotation-invariant choice of the
k nearest, so equivariance is not even defined; tie handling is covered in test_determinism.
"""
import itertools

import pytest
import torch

from model_factory import assert_model_equivariant, make_inputs, make_model
from robustness_support import assert_finite_forward_backward

INF = float("inf")
N = 8


def _cloud(n=N, seed=0):
    return torch.randn(1, n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def coincident():
    x = _cloud()
    x[0, 1] = x[0, 2] = x[0, 0]  # three nodes on one spot: zero-length edges
    x[0, 5] = x[0, 4]
    return x, {}


def collinear():
    t = torch.tensor([-1.3, -0.7, -0.4, 0.0, 0.2, 0.9, 1.1, 1.6], dtype=torch.float64)
    direction = torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64)
    return (t[:, None] * direction + torch.tensor([0.1, 0.2, -0.3], dtype=torch.float64))[None], {}


def collinear_on_frame_pole():
    """Every edge along +-y, the two poles of the edge-frame charts."""
    t = torch.tensor([-1.3, -0.7, -0.4, 0.0, 0.2, 0.9, 1.1, 1.6], dtype=torch.float64)
    return (t[:, None] * torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))[None], {}


def coplanar():
    x = _cloud()
    x[..., 2] = 0.0
    return x, {}


def at_valid_radius():
    """Pairs exactly ``valid_radius`` apart: selected (the radius is inclusive) with weight 0."""
    r = 2.0
    x = torch.tensor(
        [[0, 0, 0], [r, 0, 0], [0, r, 0], [0, 0, r], [-r, 0, 0], [0.5, 0.5, 0.5], [0.3, -0.2, 0.1], [0.0, -r, 0]],
        dtype=torch.float64,
    )[None]
    assert (torch.cdist(x, x) == r).any()
    return x, dict(valid_radius=r)


def one_node():
    return torch.tensor([[[0.3, -1.2, 2.0]]], dtype=torch.float64), {}


def node_without_neighbours():
    x = 0.3 * _cloud()
    x[0, -1] = torch.tensor([100.0, -50.0, 20.0], dtype=torch.float64)  # far beyond valid_radius
    return x, dict(valid_radius=2.5)


def fully_masked_batch_element():
    return torch.cat([_cloud(seed=1), _cloud(seed=2)]), {}


def scaled_down():
    return 1e-4 * _cloud(), {}


def scaled_up():
    return 1e4 * _cloud(), dict(valid_radius=INF, radial_max_distance=4e4)


CASES = {
    f.__name__: f
    for f in [
        coincident,
        collinear,
        collinear_on_frame_pole,
        coplanar,
        at_valid_radius,
        one_node,
        node_without_neighbours,
        fully_masked_batch_element,
        scaled_down,
        scaled_up,
    ]
}
@pytest.mark.parametrize("symmetry", ["rotation", "mirror"])
@pytest.mark.parametrize("path", ["so2", "cg"])
@pytest.mark.parametrize("attention", ["l2", "mlp"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_degenerate_geometry(case, attention, path, symmetry):
    coors, overrides = CASES[case]()
    config = dict(
        l2_dist_attention=attention == "l2",
        tensor_product=path,
        reflection_equivariance=symmetry == "mirror",
        input_degrees=2,
        dim_in=(5, 3),
        num_neighbors=INF,
        valid_radius=3.0,
        depth=1,
    )
    config.update(overrides)
    model = make_model(**config)
    b, n = coors.shape[:2]
    feats, _, mask = make_inputs(model, b=b, n=n, mask_fraction=0.0)
    if case == "fully_masked_batch_element":
        mask[1] = False
    out, coors_grad = assert_finite_forward_backward(model, feats, coors, mask)
    assert_model_equivariant(model, feats, coors, mask, reflect=symmetry == "mirror", tolerance=1e-9)

    # what makes each case the case it claims to be
    if case == "node_without_neighbours":
        assert coors_grad[0, -1].abs().max() == 0  # nobody sees it
        assert coors_grad[0, 0].abs().max() > 0
    if case == "fully_masked_batch_element":
        assert all((t[1] == 0).all() for t in out.degrees.values())
        assert coors_grad[1].abs().max() == 0
    if case == "one_node":
        assert out.type1.abs().max() > 0  # carried by the degree-1 input, not by edges


@pytest.mark.parametrize("path", ["so2", "cg"])
@pytest.mark.parametrize("linear_heads", [0, 1])
def test_nothing_but_padding_gives_zeros(linear_heads, path):
    """A batch whose every node is masked (an empty crop) runs and returns zeros."""
    model = make_model(input_degrees=2, dim_in=(5, 3), num_linear_attn_heads=linear_heads, tensor_product=path)
    feats, coors, mask = make_inputs(model, b=2, n=5)
    mask[:] = False
    out, _ = assert_finite_forward_backward(model, feats, coors, mask, nonzero_grads=False)  # no node, no gradient
    assert all((t == 0).all() for t in out.degrees.values())


def test_coincident_nodes_with_degree_inputs_keep_gradients_finite_in_float32():
    """float32 too: the zero-length edge branch must not produce inf/NaN gradients."""
    model = make_model(dtype=torch.float32, input_degrees=2, dim_in=(5, 3), num_neighbors=INF)
    coors, _ = coincident()
    feats, _, mask = make_inputs(model, b=1, n=N, dtype=torch.float32, mask_fraction=0.0)
    _, grad = assert_finite_forward_backward(model, feats, coors.float(), mask)
    assert grad.abs().max() > 0


@pytest.mark.parametrize(
    "attend_self,attention",
    list(itertools.product([True, False], ["l2", "mlp"])),
    ids=lambda v: ("self" if v else "no_self") if isinstance(v, bool) else v,
)
def test_attention_fades_out_at_valid_radius(attend_self, attention):
    """Messages fade out with the envelope: a neighbour a hair inside ``valid_radius`` (weight
    ~1e-17) changes the output next to nothing, not by O(1).  Otherwise outputs jump as
    nodes cross the radius, and equivariance fails for pairs at the radius up to rounding."""
    r = 2.0
    model = make_model(attend_self=attend_self, l2_dist_attention=attention == "l2", valid_radius=r, num_neighbors=INF, depth=1)
    feats, _, _ = make_inputs(model, b=1, n=3)

    def type1(distance):  # node 2 keeps an edge to node 0 in every case
        coors = torch.tensor([[[0, 0, 0], [0, 0, distance], [0.3 * r, 0.2 * r, 0]]], dtype=torch.float64)
        return model(feats, coors).type1[:, :2]

    apart, hair_inside, well_inside = type1(2 * r), type1(r * (1 - 1e-6)), type1(0.8 * r)
    scale = well_inside.abs().max()
    assert (well_inside - apart).abs().max() > 1e-3 * scale  # the pair does interact
    assert (hair_inside - apart).abs().max() <= 1e-4 * scale  # measured ~1e-7 with attend_self
