import pytest
import torch
from e3nn import o3

from equiformer.so3 import degree_slice, spherical_harmonics

LMAX = 10


@pytest.mark.parametrize("normalization", ["component", "integral", "norm"])
def test_matches_e3nn_up_to_degree_10(normalization):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 3, dtype=torch.float64, generator=g) * 3
    ours = spherical_harmonics(LMAX, x, normalization=normalization)
    assert ours.shape == (2000, (LMAX + 1) ** 2)
    for l in range(LMAX + 1):
        ref = o3.spherical_harmonics(l, x, normalize=True, normalization=normalization)
        assert (ours[:, degree_slice(l)] - ref).abs().max() <= 1e-10, l


def test_solid_harmonics_match_e3nn_unnormalized():
    x = torch.randn(500, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours = spherical_harmonics(6, x, normalize=False)
    ref = o3.spherical_harmonics(list(range(7)), x, normalize=False, normalization="component")
    assert (ours - ref).abs().max() <= 1e-10


def test_degree_one_is_cartesian_xyz():
    x = torch.randn(100, 3, dtype=torch.float64)
    y = spherical_harmonics(1, x)[:, 1:4]
    assert torch.allclose(y, 3**0.5 * x / x.norm(dim=-1, keepdim=True), atol=1e-14)


def test_component_normalisation_sums_to_2l_plus_1():
    y = spherical_harmonics(LMAX, torch.randn(300, 3, dtype=torch.float64))
    for l in range(LMAX + 1):
        assert torch.allclose(y[:, degree_slice(l)].pow(2).sum(-1), torch.full((300,), 2.0 * l + 1, dtype=torch.float64), atol=1e-10)


def test_zero_vector_is_finite_with_finite_gradient():
    x = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    y = spherical_harmonics(LMAX, x)
    expected = torch.zeros((LMAX + 1) ** 2, dtype=torch.float64)
    expected[0] = 1.0
    assert torch.equal(y[0].detach(), expected)
    (y * torch.arange(y.shape[-1])).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_float32_agrees_with_float64():
    x = torch.randn(1000, 3, dtype=torch.float64)
    y64 = spherical_harmonics(LMAX, x)
    y32 = spherical_harmonics(LMAX, x.float())
    assert y32.dtype == torch.float32
    # values are O(sqrt(2l+1)); float32 recursions to l = 10 keep ~6 significant digits
    assert (y32.double() - y64).abs().max() <= 1e-4


def test_gradient_matches_finite_differences():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: spherical_harmonics(4, v), (x,))


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="vectors"):
        spherical_harmonics(2, torch.randn(4, 2))
    with pytest.raises(ValueError, match="normalization"):
        spherical_harmonics(2, torch.randn(4, 3), normalization="unit")
    with pytest.raises(ValueError, match="lmax"):
        spherical_harmonics(-1, torch.randn(4, 3))
