"""Several equivariant linears of one input computed as one product per degree."""
import pytest
import torch

from equiformer.nn.linear import EquivariantLinear, linear_many
from equiformer.testing import randomize_parameters

FIBER_IN = (3, 2, 2)


def _linears():
    torch.manual_seed(0)
    linears = [EquivariantLinear(FIBER_IN, (4, 3, 1)), EquivariantLinear(FIBER_IN, (2, 2, 2), bias=False),
               EquivariantLinear(FIBER_IN, (1, 5, 3))]
    for lin in linears:
        lin.double()
        randomize_parameters(lin, generator=torch.Generator().manual_seed(1))
    return linears


def test_equals_the_separate_linears_with_their_gradients():
    linears = _linears()
    x = torch.randn(7, 3 + 2 * 3 + 2 * 5, dtype=torch.float64, requires_grad=True)
    outs = linear_many(linears, x)
    for out, lin in zip(outs, linears):
        assert (out - lin(x)).abs().max() <= 1e-14
    weights = [torch.randn_like(o) for o in outs]
    params = [p for lin in linears for p in lin.parameters()]
    fused = torch.autograd.grad(sum((o * w).sum() for o, w in zip(outs, weights)), [x, *params])
    separate = torch.autograd.grad(sum((lin(x) * w).sum() for lin, w in zip(linears, weights)), [x, *params])
    for a, b in zip(fused, separate):
        assert (a - b).abs().max() <= 1e-13


def test_second_derivatives():
    linears = _linears()
    x = torch.randn(4, 3 + 2 * 3 + 2 * 5, dtype=torch.float64, requires_grad=True)

    def energy(x):
        return sum((o.sin()).sum() for o in linear_many(linears, x))

    assert torch.autograd.gradgradcheck(energy, (x,))


def test_rejects_linears_of_different_inputs():
    with pytest.raises(ValueError, match="share their input fiber"):
        linear_many([EquivariantLinear(FIBER_IN, FIBER_IN), EquivariantLinear((3, 2), (3, 2))], torch.zeros(1, 9))
