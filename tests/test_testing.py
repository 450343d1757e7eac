import pytest
import torch

from equiformer.so3 import spherical_harmonics
from equiformer.testing import (
    assert_equivariant,
    default_tolerance,
    random_reflection,
    random_rotation,
    transform,
)


def test_random_rotations_are_proper_and_reflections_improper():
    g = torch.Generator().manual_seed(0)
    r, p = random_rotation(generator=g), random_reflection(generator=g)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(r @ r.T, eye, atol=1e-14) and abs(torch.linalg.det(r) - 1) < 1e-14
    assert torch.allclose(p @ p.T, eye, atol=1e-14) and abs(torch.linalg.det(p) + 1) < 1e-14


def test_accepts_an_equivariant_function_with_parity():
    def fn(x):
        return (spherical_harmonics(2, x)[..., 4:9],)  # degree 2

    x = torch.randn(10, 3, dtype=torch.float64)
    errors = assert_equivariant(fn, [x], [1], [2], reflect=True, translate=False)
    assert errors[0] <= 1e-12


def test_detects_a_broken_function():
    def fn(x):
        return (x + torch.tensor([0.0, 0.0, 1.0], dtype=x.dtype),)  # leaks a fixed direction

    with pytest.raises(AssertionError, match="output 0"):
        assert_equivariant(fn, [torch.randn(5, 3, dtype=torch.float64)], [1], [1], translate=False)


def test_detects_a_parity_violation():
    def fn(x):
        return (torch.linalg.cross(x[:1], x[1:2]),)  # a pseudo-vector: fine under SO(3), not O(3)

    x = torch.randn(2, 3, dtype=torch.float64)
    assert_equivariant(fn, [x], [1], [1], translate=False)
    with pytest.raises(AssertionError, match="breaks equivariance"):
        assert_equivariant(fn, [x], [1], [1], reflect=True, translate=False)


def test_coords_translate_and_vectors_do_not():
    r = random_rotation()
    t = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    x = torch.randn(4, 3, dtype=torch.float64)
    assert torch.allclose(transform(x, "coords", r, t), x @ r.T + t)
    assert torch.allclose(transform(x, 1, r, t), x @ r.T)
    assert transform(x, None, r, t) is x


def test_tolerances_depend_on_dtype():
    assert default_tolerance(torch.float64) < default_tolerance(torch.float32) < default_tolerance(torch.bfloat16)
