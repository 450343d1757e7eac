"""Checks shared by the robustness tests: finite forward and backward (equivariance by degree is
``model_factory.assert_model_equivariant``, shared with the model tests)."""
from __future__ import annotations

import torch


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
