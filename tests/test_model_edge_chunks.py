"""``edge_chunk_size``: edges processed in chunks (recomputed in backward) give the unchunked
model's outputs and gradients, for every way a fiber is rotated."""

from unittest import mock

import pytest
from model_factory import assert_model_equivariant, make_inputs, make_model

# fibers whose rotations take each code path of EdgeGeometry.rotate: one product per degree,
# one block product with degree 0 riding along as identity rows, one block product without them
FIBERS = {"per-degree-rotations": (8, 6, 4), "block-rotations-with-scalar-rows": (8, 4, 4), "block-rotations": (6, 4, 4)}


def _outputs_and_grads(model, feats, coors, mask, chunk, forces):
    model.edge_chunk_size = chunk
    model.zero_grad()
    x = coors.clone().requires_grad_(forces)
    out = model(feats, x, mask)
    outputs = [t.detach().clone() for t in out.degrees.values()]
    sum((t * t).sum() for t in out.degrees.values()).backward()
    return outputs, [p.grad.clone() for p in model.parameters() if p.grad is not None], x.grad


@pytest.mark.parametrize("forces", [True, False], ids=["frames-with-grad", "frames-without-grad"])
@pytest.mark.parametrize("reversible", [False, True], ids=["plain", "reversible"])
@pytest.mark.parametrize("attention", ["mlp", "l2"])
@pytest.mark.parametrize("dim", FIBERS.values(), ids=FIBERS.keys())
def test_edge_chunks_equal_unchunked(dim, attention, reversible, forces):
    model = make_model(dim=dim, input_degrees=2, dim_in=(5, 3), l2_dist_attention=attention == "l2", reversible=reversible)
    feats, coors, mask = make_inputs(model)
    whole_out, whole_params, whole_coords = _outputs_and_grads(model, feats, coors, mask, None, forces)
    chunk_out, chunk_params, chunk_coords = _outputs_and_grads(model, feats, coors, mask, 7, forces)
    for a, b in zip(chunk_out, whole_out):
        assert (a - b).abs().max() <= 1e-12 * b.abs().max().clamp(min=1.0)
    assert len(chunk_params) == len(whole_params) > 0
    for a, b in zip(chunk_params, whole_params):
        assert (a - b).norm() <= 1e-10 * b.norm().clamp(min=1e-30)
    if forces:
        assert whole_coords.norm() > 0
        assert (chunk_coords - whole_coords).norm() <= 1e-10 * whole_coords.norm()


def test_edge_chunks_keep_equivariance():
    model = make_model(dim=(8, 4, 4), input_degrees=2, dim_in=(5, 3), edge_chunk_size=7)
    feats, coors, mask = make_inputs(model)
    assert_model_equivariant(model, feats, coors, mask, tolerance=1e-9)


def test_edge_chunks_are_used():
    """Guard against the setting doing nothing: several chunks in every layer."""
    model = make_model(edge_chunk_size=7)
    feats, coors, mask = make_inputs(model)
    attention_class = type(model.blocks.blocks[0].attn)
    with mock.patch.object(attention_class, "_attend", autospec=True, side_effect=attention_class._attend) as spy:
        model(feats, coors, mask)
    assert spy.call_count >= 2 * len(model.blocks.blocks)
