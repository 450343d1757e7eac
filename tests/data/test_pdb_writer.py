"""The multi-MODEL PDB writer: fixed columns, and gemmi reads back what was written."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest
import torch

from equiformer.data import backbone_to_pdb, write_pdb
from equiformer.data.pdb_writer import ONE_TO_THREE


def test_three_models_round_trip_through_gemmi(tmp_path, clean_chain):
    rng = np.random.default_rng(0)
    truth = clean_chain.coords
    noisy = truth + rng.normal(scale=0.5, size=truth.shape).astype(np.float32)
    denoised = torch.tensor(truth + 0.1, requires_grad=True)  # a model output, still in autograd
    path = write_pdb(
        tmp_path / "out.pdb",
        {"truth": truth, "noisy": noisy, "denoised": denoised},
        clean_chain.sequence,
    )
    text = path.read_text()
    starts = [line[:6] for line in text.splitlines()]
    assert starts.count("MODEL ") == 3 and starts.count("ENDMDL") == 3
    assert text.rstrip().endswith("END")
    assert "REMARK 999 MODEL    2 noisy" in text

    structure = gemmi.read_structure(str(path))
    assert len(structure) == 3
    expected = [truth, noisy, truth + 0.1]
    for model, coords in zip(structure, expected):
        [chain] = list(model)
        assert [r.name for r in chain] == [ONE_TO_THREE[c] for c in clean_chain.sequence]
        read = np.array([[a.pos.x, a.pos.y, a.pos.z] for r in chain for a in r])
        names = [a.name for r in chain for a in r]
        assert names == ["N", "CA", "C", "O"] * len(clean_chain)
        np.testing.assert_allclose(read, coords.reshape(-1, 3), atol=6e-4)
        assert {a.element.name for r in chain for a in r} == {"N", "C", "O"}


def test_fixed_columns(clean_chain):
    text = backbone_to_pdb(clean_chain.coords[:2], clean_chain.sequence[:2], chain_id="Q")
    lines = text.splitlines()
    atom = lines[1]  # CA of residue 1
    assert all(len(line) == 80 for line in lines)
    assert atom[0:6] == "ATOM  " and atom[6:11] == "    2"
    assert atom[12:16] == " CA " and atom[21] == "Q" and atom[22:26] == "   1"
    assert float(atom[30:38]) == pytest.approx(clean_chain.coords[0, 1, 0], abs=5e-4)
    assert atom[76:78] == " C"
    assert lines[-1].startswith("TER       9")


def test_missing_atoms_are_left_out_and_bad_input_rejected(clean_chain):
    mask = np.ones((3, 4), bool)
    mask[1, 3] = False
    text = backbone_to_pdb(clean_chain.coords[:3], clean_chain.sequence[:3], atom_mask=mask)
    assert sum(line.startswith("ATOM") for line in text.splitlines()) == 11
    far = clean_chain.coords[:3].copy()
    far[0, 0, 0] = -1234.0
    with pytest.raises(ValueError, match="columns"):
        backbone_to_pdb(far, clean_chain.sequence[:3])
    with pytest.raises(ValueError, match="shape"):
        backbone_to_pdb(clean_chain.coords[:3], clean_chain.sequence[:4])


def test_fields_are_checked_as_written_not_before_rounding():
    """-999.9996 passed a "> -1000" check but was written as "-1000.000" (9 columns)."""
    coords = np.zeros((3, 4, 3))
    coords[..., 0] = np.arange(12).reshape(3, 4)
    for value in (-999.9996, 9999.9996, -1000.0, np.nan):
        bad = coords.copy()
        bad[1, 2, 1] = value
        with pytest.raises(ValueError, match="coords"):
            backbone_to_pdb(bad, "AAA")
    with pytest.raises(ValueError, match="first_residue=9998"):
        backbone_to_pdb(coords, "AAA", first_residue=9998)  # residue 10000
    with pytest.raises(ValueError, match="first_residue=-1000"):
        backbone_to_pdb(coords, "AAA", first_residue=-1000)
    with pytest.raises(ValueError, match="first_serial=99988"):
        backbone_to_pdb(coords, "AAA", first_serial=99988)  # TER would be serial 100000
    with pytest.raises(ValueError, match="first_serial=0"):
        backbone_to_pdb(coords, "AAA", first_serial=0)
    # the extremes that do fit are written, in 80 columns
    edge = coords.copy()
    edge[0, 0] = (-999.9994, 9999.9994, 0.0)
    for text in (
        backbone_to_pdb(edge, "AAA", first_residue=-999),
        backbone_to_pdb(coords, "AAA", first_residue=9997, first_serial=99987),
    ):
        assert all(len(line) == 80 for line in text.splitlines())
    text = backbone_to_pdb(edge, "AAA", first_residue=9997, first_serial=99987)
    first = text.splitlines()[0]
    assert first[30:38] == "-999.999" and first[38:46] == "9999.999" and first[22:26] == "9997"
    assert text.splitlines()[-1][6:11] == "99999"
