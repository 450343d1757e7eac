"""Checks shared by the robustness tests: finite forward and backward, equivariance by degree."""
from __future__ import annotations

import torch

from equiformer.testing import (
    assert_equivariant,
    equivariance_errors,
    random_reflection,
    random_rotation,
    random_translation,
)


def weighted_loss(outputs, seed: int = 0) -> torch.Tensor:
    """A scalar touching every output component with a different fixed weight (a plain sum could
    cancel symmetric contributions and hide a non-finite gradient)."""
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for t in outputs:
        w = torch.randn(t.shape, dtype=torch.float64, generator=g).to(torch.float32 if t.dtype != torch.float64 else t.dtype)
        total = total + (t.to(w.dtype) * w).sum()
    return total


def assert_finite_forward_backward(model, inputs, coors, *args, nonzero_grads=True, **kwargs):
    """Runs the model with gradients on ``coors`` and the parameters; asserts every output, the
    coordinate gradient and every parameter gradient finite (and, with ``nonzero_grads``, some
    parameter gradient non-zero).  Returns ``(out, coordinate grad)``."""
    coors = coors.detach().clone().requires_grad_()
    out = model(inputs, coors, *args, **kwargs)
    outputs = list(out.degrees.values())
    for l, t in enumerate(outputs):
        assert torch.isfinite(t).all(), f"degree-{l} output is not finite"
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(weighted_loss(outputs), [coors, *params], allow_unused=True)
    assert torch.isfinite(grads[0]).all(), "gradient with respect to coors is not finite"
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    bad = [name for name, g in zip(names, grads[1:]) if g is not None and not torch.isfinite(g).all()]
    assert not bad, f"non-finite parameter gradients: {bad}"
    if nonzero_grads:
        assert any(g is not None and g.abs().sum() > 0 for g in grads[1:]), "no parameter received a gradient"
    return out, grads[0]


def assert_model_equivariant(model, feats: dict, coors, mask=None, reflect=False, tolerance=1e-9, seed=0,
                             output_scale=None, **kwargs):
    """Every output degree transforms with its Wigner-D block (a mirror too if ``reflect``).

    By default ``equiformer.testing.assert_equivariant``: errors relative to each output's
    largest entry.  ``output_scale`` sets a least scale instead: the network's outputs are
    layer-normalised, O(1) whenever they are not zero, and an output that is exactly zero (nodes
    that saw no direction at all) would otherwise turn rounding (1e-13) into an infinite
    relative error."""
    degrees = sorted(feats)

    def fn(*args):
        out = model(dict(zip(degrees, args[:-1])), args[-1], mask, **kwargs)
        return tuple(out.degrees.values())

    args = [feats[l] for l in degrees] + [coors]
    kinds = degrees + ["coords"]
    kinds_out = list(range(model.num_degrees))
    generator = torch.Generator().manual_seed(seed)
    if output_scale is None:
        return assert_equivariant(fn, args, kinds, kinds_out, reflect=reflect, tolerance=tolerance, generator=generator)
    rotation = (random_reflection if reflect else random_rotation)(torch.float64, None, generator)
    translation = random_translation(torch.float64, None, generator)
    relative = equivariance_errors(fn, args, kinds, kinds_out, rotation, translation)
    for l, (y, err) in enumerate(zip(fn(*args), relative)):
        scale = max(y.detach().abs().max().item(), torch.finfo(y.dtype).tiny)
        error = err * scale / max(scale, output_scale)
        assert error <= tolerance, f"degree-{l} output breaks equivariance: error {error:.3e} > {tolerance:.1e}"
    return relative
