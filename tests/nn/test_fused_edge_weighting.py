"""MLP attention multiplies its edge values once: gate factors and attention weights are combined
on the small (E, G) gate tensor first, and with order-major values the convolution's per-order
products are weighted one order at a time.  Same numbers as gating, then weighting per head."""
import pytest
import torch

from equiformer.nn.attention import MLPAttention
from model_factory import make_inputs, make_model


MODES = {"by-order": (True, True), "fused": (True, False), "gate-then-heads": (False, False)}


def _run(model, feats, coors, mask, mode):
    for layer in model.modules():
        if isinstance(layer, MLPAttention):
            layer.fused_weighting, layer.by_order = MODES[mode]
    model.zero_grad()
    x = coors.clone().requires_grad_(True)
    out = model(feats, x, mask)
    sum((t * t).sum() for t in out.degrees.values()).backward()
    return [t.detach() for t in out.degrees.values()], x.grad, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("mmax", [None, 1])
@pytest.mark.parametrize(
    "dim, heads, dim_head, by_order",
    [((8, 6, 4, 4), (2, 2, 1, 1), (4, 3, 2, 2), False), ((8, 4, 4, 4), (2, 2, 2, 2), (4, 2, 2, 2), True)],
    ids=["degree-major", "order-major"],
)
def test_fused_weighting_equals_gate_then_heads(dim, heads, dim_head, by_order, mmax):
    model = make_model(dim=dim, num_degrees=4, heads=heads, dim_head=dim_head, l2_dist_attention=False, mmax=mmax)
    layers = [m for m in model.modules() if isinstance(m, MLPAttention)]
    assert layers and all(m.fused_weighting and m.by_order == by_order for m in layers)  # the defaults
    feats, coors, mask = make_inputs(model)
    coors[:, 3] = coors[:, 5]  # an edge without a direction: the convolution's isotropic rows
    plain = _run(model, feats, coors, mask, "gate-then-heads")
    for mode in ["by-order", "fused"] if by_order else ["fused"]:
        fused = _run(model, feats, coors, mask, mode)
        for a, b in zip(fused[0], plain[0]):
            assert b.abs().max() > 1e-3 and (a - b).abs().max() <= 1e-12 * b.abs().max()
        assert (fused[1] - plain[1]).norm() <= 1e-12 * plain[1].norm()
        for a, b in zip(fused[2], plain[2]):
            assert (a - b).norm() <= 1e-11 * b.norm().clamp(min=1e-30)


def test_single_headed_values_keep_the_unfused_path():
    model = make_model(l2_dist_attention=False, single_headed_kv=True, dim_head=(4, 3, 3), heads=(2, 2, 2))
    assert not any(m.fused_weighting or m.by_order for m in model.modules() if isinstance(m, MLPAttention))
