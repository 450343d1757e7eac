"""Rotation, translation (and reflection, for E(3) models) equivariance of the whole network.

Every weight is randomised away from its initial value first (see conftest.make_model)."""
import itertools

import pytest
import torch

from equiformer.testing import assert_equivariant, default_tolerance
from model_factory import assert_model_equivariant, chain_adjacency, make_inputs, make_model

COMBOS = list(itertools.product(["mlp", "l2"], ["so2", "cg"], [False, True], [1, 2], [False, True], [False, True]))


def _check(attention, path, reversible, input_degrees, use_edges, use_adj, reflect, dtype, tolerance=None):
    overrides = dict(
        l2_dist_attention=attention == "l2",
        tensor_product=path,
        reversible=reversible,
        input_degrees=input_degrees,
        dim_in=(5, 3)[:input_degrees],
        reflection_equivariance=reflect,
        num_linear_attn_heads=1,
    )
    if use_edges:
        overrides.update(num_edge_tokens=3, edge_dim=4)
    if use_adj:
        overrides.update(attend_sparse_neighbors=True, num_adj_degrees_embed=2)
    model = make_model(dtype=dtype, **overrides)
    feats, coors, mask = make_inputs(model, n=16, dtype=dtype)
    kwargs = {}
    if use_edges:
        kwargs["edges"] = torch.randint(0, 3, (2, 16, 16), generator=torch.Generator().manual_seed(3))
    if use_adj:
        kwargs["adj_mat"] = chain_adjacency(16)
    tolerance = tolerance if tolerance is not None else default_tolerance(dtype)
    return assert_model_equivariant(model, feats, coors, mask, reflect=reflect, tolerance=tolerance, **kwargs)


@pytest.mark.parametrize("attention,path,reversible,input_degrees,use_edges,use_adj", COMBOS)
def test_rotation_translation_float64(attention, path, reversible, input_degrees, use_edges, use_adj):
    errors = _check(attention, path, reversible, input_degrees, use_edges, use_adj, reflect=False, dtype=torch.float64)
    assert max(errors) <= 1e-10


@pytest.mark.parametrize("attention,path,reversible,input_degrees,use_edges,use_adj", COMBOS)
def test_reflection_float64(attention, path, reversible, input_degrees, use_edges, use_adj):
    errors = _check(attention, path, reversible, input_degrees, use_edges, use_adj, reflect=True, dtype=torch.float64)
    assert max(errors) <= 1e-10


@pytest.mark.parametrize("attention,path,reversible", list(itertools.product(["mlp", "l2"], ["so2", "cg"], [False, True])))
def test_rotation_float32(attention, path, reversible):
    # float32 rounding (~6e-8) grows through two blocks of randomised weights: 1e-4 relative is honest
    errors = _check(attention, path, reversible, 2, True, True, reflect=False, dtype=torch.float32)
    assert max(errors) <= 1e-4


def test_without_reflection_flag_parity_is_not_guaranteed():
    """The SE(3) model mixes in pseudo-tensor paths, so a mirror generally breaks it: the
    reflection test above is not vacuous."""
    model = make_model(l2_dist_attention=False)
    feats, coors, mask = make_inputs(model)
    with pytest.raises(AssertionError, match="breaks equivariance"):
        assert_equivariant(
            lambda f0, x: (model(f0, x, mask).type1,), [feats[0], coors], [0, "coords"], [1], reflect=True
        )


OPTION_SWITCHES = {
    "ff-htype-norms": dict(ff_include_htype_norms=True),
    "no-head-gates": dict(gate_attn_head_outputs=False),
    "single-headed-kv": dict(single_headed_kv=True),
    "no-self-attention": dict(attend_self=False),
    "all-neighbours": dict(num_neighbors=float("inf"), valid_radius=1e5),
    "edge-chunks": dict(edge_chunk_size=7),
}


@pytest.mark.parametrize("attention", ["mlp", "l2"])
@pytest.mark.parametrize("switch", OPTION_SWITCHES.values(), ids=OPTION_SWITCHES.keys())
def test_option_switches_keep_e3_equivariance(switch, attention):
    """Switches the combinations above leave at their defaults, with mirrors included."""
    model = make_model(l2_dist_attention=attention == "l2", reflection_equivariance=True, input_degrees=2, dim_in=(5, 3), **switch)
    feats, coors, mask = make_inputs(model, n=16)
    errors = assert_model_equivariant(model, feats, coors, mask, reflect=True, tolerance=1e-10)
    assert max(errors) <= 1e-10
