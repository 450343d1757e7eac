"""Backbone record: validation, the residue alphabet and geometric chain-break detection."""

from __future__ import annotations

import numpy as np
import pytest

from equiformer.data import AMINO_ACIDS, Backbone, chain_breaks, residue_index


def test_residue_index_maps_standard_and_unknown_letters():
    assert len(AMINO_ACIDS) == 21 and AMINO_ACIDS[-1] == "X"
    np.testing.assert_array_equal(residue_index("ACYX"), [0, 1, 19, 20])
    np.testing.assert_array_equal(residue_index("acy"), residue_index("ACY"))
    np.testing.assert_array_equal(residue_index("BZ*Jé"), [20] * 5)
    assert residue_index("GG").dtype == np.int64


def _record(n: int, **overrides) -> Backbone:
    fields = dict(
        id="t_A",
        entry="t",
        sequence="G" * n,
        coords=np.zeros((n, 4, 3)),
        atom_mask=np.ones((n, 4), bool),
        chain_break=np.zeros(n, bool),
    )
    fields.update(overrides)
    return Backbone(**fields)


@pytest.mark.parametrize(
    ("field", "bad", "expected"),
    [
        ("coords", np.zeros((5, 3, 3)), "(L, 4, 3)"),
        ("atom_mask", np.ones((4, 4), bool), "(L, 4)"),
        ("chain_break", np.zeros(6, bool), "(L)"),
    ],
)
def test_shape_errors_name_the_field_and_shape(field, bad, expected):
    with pytest.raises(ValueError) as error:
        _record(5, **{field: bad})
    assert f"Backbone.{field}" in str(error.value)
    assert expected in str(error.value)


def test_first_residue_cannot_start_a_break():
    with pytest.raises(ValueError, match="chain_break"):
        _record(3, chain_break=np.array([True, False, False]))


def test_masked_coords_are_zeroed_and_dtypes_fixed():
    coords = np.full((3, 4, 3), 7.0)
    mask = np.ones((3, 4), bool)
    mask[1, 2] = False
    record = _record(3, coords=coords, atom_mask=mask)
    assert record.coords.dtype == np.float32 and record.atom_mask.dtype == bool
    assert (record.coords[1, 2] == 0).all() and (record.coords[1, 1] == 7).all()
    assert record.num_resolved == 3


def test_chain_break_found_by_geometry(clean_chain):
    coords = clean_chain.coords.copy()
    mask = clean_chain.atom_mask.copy()
    assert not chain_breaks(coords, mask).any()
    coords[30:] += np.array([0.0, 0.0, 10.0], np.float32)  # a gap, numbering unchanged
    mask[45, 2] = False  # missing C of residue 45 -> residue 46 cannot be bonded
    expected = np.zeros(len(coords), bool)
    expected[[30, 46]] = True
    np.testing.assert_array_equal(chain_breaks(coords, mask), expected)
    rebuilt = Backbone.from_atoms("x", "x", clean_chain.sequence, coords, mask)
    np.testing.assert_array_equal(rebuilt.chain_break, expected)


def test_chain_break_threshold_is_two_angstrom():
    coords = np.zeros((3, 4, 3), np.float32)
    coords[0, 2] = (0.0, 0.0, 0.0)  # C of residue 0
    coords[1, 0] = (1.9, 0.0, 0.0)  # N of residue 1: bonded
    coords[1, 2] = (5.0, 0.0, 0.0)  # C of residue 1
    coords[2, 0] = (7.1, 0.0, 0.0)  # N of residue 2: 2.1 Å away, a break
    mask = np.ones((3, 4), bool)
    np.testing.assert_array_equal(chain_breaks(coords, mask), [False, False, True])
