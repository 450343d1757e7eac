import pytest
import torch
from e3nn import o3

from equiformer.so3 import clebsch_gordan, wigner_D
from equiformer.testing import random_rotation


def _triples(lmax):
    for l1 in range(lmax + 1):
        for l2 in range(lmax + 1):
            for l3 in range(abs(l1 - l2), min(l1 + l2, lmax) + 1):
                yield l1, l2, l3


def test_matches_e3nn_for_every_triple_up_to_4():
    for l1, l2, l3 in _triples(4):
        ours = clebsch_gordan(l1, l2, l3, dtype=torch.float64)
        ref = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
        assert (ours - ref).abs().max() <= 1e-10, (l1, l2, l3)


@pytest.mark.parametrize("lmax", [4])
def test_invariant_under_rotations(lmax):
    r = random_rotation(torch.float64, generator=torch.Generator().manual_seed(5))
    d = wigner_D(12, r)
    for l1, l2, l3 in list(_triples(lmax)) + [(5, 3, 8), (6, 6, 12)]:
        c = clebsch_gordan(l1, l2, l3, dtype=torch.float64)
        rotated = torch.einsum("abc,ai,bj,ck->ijk", c, d[l1], d[l2], d[l3])
        assert (rotated - c).abs().max() <= 1e-12, (l1, l2, l3)
        assert abs(c.norm().item() - 1.0) <= 1e-12


def test_returns_fresh_copies_in_the_callers_dtype():
    a = clebsch_gordan(2, 2, 2, dtype=torch.float32)
    assert a.dtype == torch.float32
    a.zero_()
    assert clebsch_gordan(2, 2, 2, dtype=torch.float32).abs().max() > 0


def test_triangle_rule_is_enforced():
    with pytest.raises(ValueError, match="triangle"):
        clebsch_gordan(1, 1, 3)
