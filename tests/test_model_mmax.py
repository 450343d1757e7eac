"""``mmax``: edge frames keep orders ``|m| <= mmax`` only (eSCN, EquiformerV2).

Exactly equivariant (rotations, and reflections for E(3) models) for every way a fiber is
rotated, coincident nodes included; the same function as the untruncated model whose weights of
the dropped orders are zero; no change at all when ``mmax >= lmax``."""
import re

import pytest
import torch
from model_factory import assert_model_equivariant, make_inputs, make_model

from equiformer import Equiformer

# lmax 3 fibers taking each path of EdgeGeometry.rotate: per-degree rotations (degree-major),
# one block with degree 0 as identity rows, one block without them (order-major)
FIBERS = {"degree-major": (8, 6, 4, 4), "order-major-with-scalar-rows": (8, 4, 4, 4), "order-major": (6, 4, 4, 4)}
SMALL = dict(num_degrees=4, heads=(2, 2, 1, 1), dim_head=(4, 3, 2, 2), input_degrees=2, dim_in=(5, 3))


def _with_coincident_nodes(coors: torch.Tensor) -> torch.Tensor:
    coors = coors.clone()
    coors[:, 3] = coors[:, 5]  # an edge without a direction in each graph
    return coors


@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "reflection"])
@pytest.mark.parametrize("attention", ["mlp", "l2"])
@pytest.mark.parametrize("dim", FIBERS.values(), ids=FIBERS.keys())
@pytest.mark.parametrize("mmax", [0, 1, 2])
def test_truncated_model_is_equivariant_float64(mmax, dim, attention, reflect):
    model = make_model(dim=dim, mmax=mmax, l2_dist_attention=attention == "l2", reflection_equivariance=reflect, **SMALL)
    feats, coors, mask = make_inputs(model)
    errors = assert_model_equivariant(model, feats, _with_coincident_nodes(coors), mask, reflect=reflect, tolerance=1e-10)
    assert max(errors) <= 1e-10


@pytest.mark.parametrize("attention", ["mlp", "l2"])
def test_truncated_model_is_equivariant_float32(attention):
    model = make_model(dtype=torch.float32, dim=(8, 4, 4, 4), mmax=1, l2_dist_attention=attention == "l2", **SMALL)
    feats, coors, mask = make_inputs(model, dtype=torch.float32)
    # float32 rounding (~6e-8) through two blocks of randomised weights: 1e-4 relative is honest
    assert max(assert_model_equivariant(model, feats, coors, mask, tolerance=1e-4)) <= 1e-4


_HIGH_ORDER_WEIGHT = re.compile(r"\.weight_(real|imag)\.(\d+)$")


@pytest.mark.parametrize("dim", FIBERS.values(), ids=FIBERS.keys())
def test_truncation_is_the_full_model_with_the_dropped_orders_weights_zero(dim):
    """Where every edge has a direction and logits come from invariants (MLP attention), keeping
    orders <= mmax is the same function as computing all orders with zero weights above mmax."""
    mmax = 1
    truncated = make_model(dim=dim, mmax=mmax, l2_dist_attention=False, **SMALL)
    full = make_model(dim=dim, l2_dist_attention=False, **SMALL)
    kept = truncated.state_dict()
    state, zeroed = {}, 0
    for name, value in full.state_dict().items():
        if name in kept:
            state[name] = kept[name]
            continue
        match = _HIGH_ORDER_WEIGHT.search(name)
        order = int(match.group(2)) + (match.group(1) == "imag")  # weight_imag[k] is order k + 1
        assert order > mmax, name
        state[name], zeroed = torch.zeros_like(value), zeroed + 1
    assert zeroed > 0 and set(kept) <= set(state)
    full.load_state_dict(state, strict=True)
    feats, coors, mask = make_inputs(full)
    a, b = truncated(feats, coors, mask), full(feats, coors, mask)
    for l in range(4):
        x, y = a.degrees[l], b.degrees[l]
        assert y.abs().max() > 1e-3
        assert (x - y).abs().max() <= 1e-12 * y.abs().max()
    # and it is a different function from the full model with its own weights
    other = make_model(dim=dim, l2_dist_attention=False, **SMALL)(feats, coors, mask)
    assert (other.degrees[2] - b.degrees[2]).abs().max() > 1e-3


@pytest.mark.parametrize("tensor_product", ["so2", "cg"])
def test_mmax_at_or_above_lmax_changes_nothing(tensor_product):
    plain = make_model(tensor_product=tensor_product)  # lmax 2
    same = make_model(tensor_product=tensor_product, mmax=2)
    assert same.config.mmax == 2 and same.edge_layout == plain.edge_layout
    assert list(same.state_dict()) == list(plain.state_dict())
    feats, coors, mask = make_inputs(plain)
    a, b = plain(feats, coors, mask), same(feats, coors, mask)
    assert all(torch.equal(a.degrees[l], b.degrees[l]) for l in range(3))


@pytest.mark.parametrize("attention", ["mlp", "l2"])
def test_edge_chunks_and_regular_graphs_agree_with_truncation(attention):
    """The dense per-receiver rotation (k-nearest graphs), the per-edge one (chunks) and their
    gradients, forces included, are the same numbers when orders are dropped."""
    model = make_model(dim=(8, 4, 4, 4), mmax=1, l2_dist_attention=attention == "l2", **SMALL)
    feats, coors, mask = make_inputs(model)
    results = []
    for chunk in (None, 7):
        model.edge_chunk_size = chunk
        model.zero_grad()
        x = coors.clone().requires_grad_(True)
        out = model(feats, x, mask)
        sum((t * t).sum() for t in out.degrees.values()).backward()
        results.append(([t.detach() for t in out.degrees.values()], x.grad, [p.grad.clone() for p in model.parameters()]))
    (out_a, force_a, grads_a), (out_b, force_b, grads_b) = results
    for a, b in zip(out_a, out_b):
        assert (a - b).abs().max() <= 1e-12 * b.abs().max().clamp(min=1.0)
    assert force_a.norm() > 0 and (force_a - force_b).norm() <= 1e-10 * force_a.norm()
    for a, b in zip(grads_a, grads_b):
        assert (a - b).norm() <= 1e-10 * b.norm().clamp(min=1e-30)


def test_truncated_checkpoint_round_trip():
    model = make_model(dim=(8, 4, 4, 4), mmax=1, **SMALL)
    rebuilt = Equiformer.from_config(model.config.to_dict()).double()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert rebuilt.config.mmax == 1
    feats, coors, mask = make_inputs(model)
    assert torch.equal(model(feats, coors, mask).type2, rebuilt(feats, coors, mask).type2)
    # fewer weights than the untruncated model: the orders above mmax have none
    full = make_model(dim=(8, 4, 4, 4), **SMALL)
    assert sum(p.numel() for p in rebuilt.parameters()) < sum(p.numel() for p in full.parameters())
