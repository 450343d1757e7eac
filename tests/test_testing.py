import pytest
import torch

from equiformer.so3 import spherical_harmonics
from equiformer.testing import (
    equivariance_errors,
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


def test_non_finite_outputs_fail_the_check():
    """NaN marked absent outputs, so an output turning NaN (or inf) after the rotation passed."""
    def nan_after_rotation(x):
        y = x.clone()
        return (y if x[0, 0] > 0 else y * float("nan"),)

    x = torch.randn(5, 3, dtype=torch.float64)
    x[0] = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    r = torch.tensor([[-1.0, 0, 0], [0, -1.0, 0], [0, 0, 1.0]], dtype=torch.float64)  # x[0, 0] -> -1
    assert equivariance_errors(nan_after_rotation, [x], [1], [1], r) == [float("inf")]
    with pytest.raises(AssertionError, match="output 0"):
        assert_equivariant(lambda x: (x * float("inf"),), [x], [1], [1], translate=False)
    # an absent output is still skipped
    assert assert_equivariant(lambda x: (x, None), [x], [1], [1, 1], translate=False)[0] < 1e-12


def test_lengths_must_match_and_a_bare_tensor_is_one_output():
    x = torch.randn(5, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="out_kinds"):
        assert_equivariant(lambda x: (x, x + 1.0), [x], [1], [1], translate=False)  # second unchecked
    with pytest.raises(ValueError, match="in_kinds"):
        assert_equivariant(lambda x, m: (x,), [x, None], [1], [1], translate=False)
    broken_row = lambda x: x + torch.tensor([[0.0, 0.0, 0.0]] + [[0.0, 0.0, 1.0]] * 4, dtype=x.dtype)  # noqa: E731
    with pytest.raises(AssertionError, match="output 0"):
        assert_equivariant(broken_row, [x], [1], [1], translate=False)  # was zipped row by row
    assert assert_equivariant(lambda x: x, [x], [1], [1], translate=False)[0] < 1e-12


def test_a_model_return_is_checked_at_every_degree():
    """``Return`` is a (type0, type1) namedtuple; its degree-2 output must not go unchecked."""
    from equiformer import Equiformer
    from equiformer.testing import randomize_parameters

    torch.manual_seed(0)
    model = Equiformer(dim=8, num_degrees=3, heads=2, dim_head=4, depth=1).double()
    randomize_parameters(model)
    feats, coors = torch.randn(1, 6, 8, dtype=torch.float64), torch.randn(1, 6, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="3 outputs"):
        assert_equivariant(model, [feats, coors], [0, "coords"], [0, 1])
    errors = assert_equivariant(model, [feats, coors], [0, "coords"], [0, 1, 2])
    assert len(errors) == 3 and max(errors) < 1e-9
