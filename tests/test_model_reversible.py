"""The activation-free reversible backward gives the gradients of plain autograd."""

import pytest
from model_factory import make_inputs, make_model


def _grads(model, feats, coors, mask, memory_saving, forces):
    model.blocks.memory_saving = memory_saving
    model.zero_grad()
    x = coors.clone().requires_grad_(forces)
    out = model(feats, x, mask)
    (out.type0.sum() + (out.type1 * out.type1).sum()).backward()
    return [p.grad.clone() for p in model.parameters() if p.grad is not None], x.grad


@pytest.mark.parametrize("forces", [True, False], ids=["frames-with-grad", "frames-without-grad"])
@pytest.mark.parametrize(
    "dim",
    [(8, 6, 4), (8, 4, 4), (6, 4, 4)],
    ids=["per-degree-rotations", "block-rotations-with-scalar-rows", "block-rotations"],
)
def test_reversible_gradients_equal_plain_autograd(dim, forces):
    model = make_model(reversible=True, depth=3, num_linear_attn_heads=1, l2_dist_attention=False, dim=dim)
    feats, coors, mask = make_inputs(model)
    params_a, coords_a = _grads(model, feats, coors, mask, memory_saving=True, forces=forces)
    params_b, coords_b = _grads(model, feats, coors, mask, memory_saving=False, forces=forces)
    assert len(params_a) == len(params_b) > 0
    for a, b in zip(params_a, params_b):
        assert (a - b).norm() <= 1e-6 * b.norm().clamp(min=1e-30)
    if forces:
        assert (coords_a - coords_b).norm() <= 1e-6 * coords_b.norm()
        assert coords_b.norm() > 0


def test_reversible_and_plain_blocks_differ():
    """Guard against the switch doing nothing: the reversible architecture is a different function."""
    rev = make_model(reversible=True, seed=3)
    plain = make_model(reversible=False, seed=3)
    feats, coors, mask = make_inputs(rev)
    assert (rev(feats, coors, mask).type0 - plain(feats, coors, mask).type0).abs().max() > 1e-6


def test_reversible_frozen_and_copied_parameters():
    """The memory-saving backward reads each block's parameters from lists made at construction:
    a frozen parameter gets no gradient, the others still match plain autograd, and a deep copy
    trains its own parameters, not the original's."""
    import copy

    model = make_model(reversible=True, depth=2)
    frozen = model.blocks.blocks[0].attn.to_out.weights[0]
    frozen.requires_grad_(False)
    feats, coors, mask = make_inputs(model)
    params_a, _ = _grads(model, feats, coors, mask, memory_saving=True, forces=False)
    params_b, _ = _grads(model, feats, coors, mask, memory_saving=False, forces=False)
    assert frozen.grad is None
    assert len(params_a) == len(params_b) > 0
    for a, b in zip(params_a, params_b):
        assert (a - b).norm() <= 1e-6 * b.norm().clamp(min=1e-30)

    twin = copy.deepcopy(model)
    model.zero_grad()
    out = twin(feats, coors, mask)
    (out.type0.sum() + (out.type1 * out.type1).sum()).backward()
    assert all(p.grad is None for p in model.parameters())
    assert sum(p.grad.norm() for p in twin.parameters() if p.grad is not None) > 0


def _step_grads(model, feats, coors, mask, memory_saving, between=None):
    """Gradients of one step; ``between`` runs after the forward, before the backward."""
    model.blocks.memory_saving = memory_saving
    model.zero_grad()
    out = model(feats, coors, mask)
    if between is not None:
        between()
    (out.type0.sum() + (out.type1 * out.type1).sum()).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("frozen_in_forward", [False, True], ids=["frozen-after", "unfrozen-after"])
def test_reversible_parameter_toggled_after_forward(frozen_in_forward):
    """As in plain autograd: a parameter frozen between forward and backward gets no gradient,
    and so does one unfrozen there (the forward did not record it); every other gradient is
    unchanged."""
    model = make_model(reversible=True, depth=2)
    feats, coors, mask = make_inputs(model)
    param = next(model.blocks.blocks[1].ff.parameters())
    name = next(n for n, p in model.named_parameters() if p is param)
    results = []
    for memory_saving in (True, False):
        param.requires_grad_(not frozen_in_forward)
        results.append(_step_grads(model, feats, coors, mask, memory_saving, between=lambda: param.requires_grad_(frozen_in_forward)))
    saving, plain = results
    assert name not in saving and name not in plain
    assert saving.keys() == plain.keys() and len(plain) > 0
    for key, b in plain.items():
        assert (saving[key] - b).norm() <= 1e-6 * b.norm().clamp(min=1e-30)


def test_reversible_parameter_shared_by_two_blocks_gets_both_gradients():
    """A tied parameter (one tensor in two blocks) is handed to the backward twice; its gradient
    must be the sum of both blocks' parts, as plain autograd gives."""
    model = make_model(reversible=True, depth=2)
    model.blocks.blocks[1].ff = model.blocks.blocks[0].ff  # tie the feed-forwards
    model.blocks.blocks[1]._submodules["ff"] = list(model.blocks.blocks[0].ff.modules())
    feats, coors, mask = make_inputs(model)
    saving = _step_grads(model, feats, coors, mask, memory_saving=True)
    plain = _step_grads(model, feats, coors, mask, memory_saving=False)
    tied = [n for n in plain if ".blocks.0.ff." in n]
    assert tied and saving.keys() == plain.keys()
    for key, b in plain.items():
        assert (saving[key] - b).norm() <= 1e-6 * b.norm().clamp(min=1e-30), key
