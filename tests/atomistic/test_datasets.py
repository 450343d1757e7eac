"""Offline training data: files ASE reads back, labels that are real EMT / GFN2-xTB results."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ase_io = pytest.importorskip("ase.io")  # CI installs it with .[test]; the module is all about ase
from ase.calculators.emt import EMT

from equiformer.atomistic.datasets import make_emt_dataset, make_xtb_dataset

# Small but complete: 4 trajectories of 2 frames, one per kind (kinds are cycled).
SMALL = {"frames_per_trajectory": 2, "equilibration_steps": 5, "stride": 2}
FRAMES = 8
# Forces go into extxyz columns with 8 decimals (ASE's "%16.8f"), energy and stress at full precision.
FORCE_FILE_PRECISION = 5e-9 + 1e-12


@pytest.fixture(scope="module")
def emt_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_emt_dataset(tmp_path_factory.mktemp("emt") / "train.extxyz", FRAMES, seed=7, **SMALL)


@pytest.fixture(scope="module")
def emt_frames(emt_file: Path) -> list:
    return ase_io.read(emt_file, ":")


def test_every_frame_has_energy_forces_and_voigt_stress(emt_frames: list) -> None:
    assert len(emt_frames) == FRAMES
    for atoms in emt_frames:
        assert 31 <= len(atoms) <= 108
        assert np.isfinite(atoms.get_potential_energy())
        assert atoms.get_forces().shape == (len(atoms), 3)
        assert atoms.get_stress().shape == (6,)
        assert atoms.info["config_type"] in ("bulk", "alloy", "vacancy", "slab")
        assert 300.0 <= atoms.info["md_temperature_K"] <= 1200.0


def test_labels_are_a_fresh_emt_evaluation_of_the_stored_frame(emt_frames: list) -> None:
    for atoms in emt_frames:
        fresh = atoms.copy()
        fresh.calc = EMT()
        np.testing.assert_allclose(atoms.get_potential_energy(), fresh.get_potential_energy(), rtol=0, atol=1e-10)
        np.testing.assert_allclose(atoms.get_stress(), fresh.get_stress(voigt=True), rtol=0, atol=1e-10)
        np.testing.assert_allclose(atoms.get_forces(), fresh.get_forces(), rtol=0, atol=FORCE_FILE_PRECISION)


def test_frames_move_and_strain_so_labels_vary(emt_frames: list) -> None:
    # MD and strain are doing something: no two frames share an energy, and the cells are not cubic
    energies = [atoms.get_potential_energy() for atoms in emt_frames]
    assert len(set(energies)) == len(energies)
    bulk = [atoms for atoms in emt_frames if atoms.info["config_type"] == "bulk"]
    off_diagonal = bulk[0].cell[:] - np.diag(np.diag(bulk[0].cell[:]))
    assert np.abs(off_diagonal).max() > 1e-4
    assert np.abs(bulk[0].get_stress()[3:]).max() > 1e-6  # shear stress from the shear strain


def test_all_kinds_appear_with_their_defining_features(emt_frames: list) -> None:
    by_kind: dict[str, list] = {}
    for atoms in emt_frames:
        by_kind.setdefault(atoms.info["config_type"], []).append(atoms)
    assert set(by_kind) == {"bulk", "alloy", "vacancy", "slab"}
    perfect_sizes = {32, 48, 72, 108}  # 4 atoms per conventional cell, 2 or 3 cells per axis
    for atoms in by_kind["bulk"]:
        assert len(atoms) in perfect_sizes and set(atoms.symbols) == {"Cu"} and atoms.pbc.all()
    for atoms in by_kind["alloy"]:
        assert len(atoms) in perfect_sizes and set(atoms.symbols) == {"Cu", "Au"} and atoms.pbc.all()
    for atoms in by_kind["vacancy"]:
        assert len(atoms) + 1 in perfect_sizes and atoms.pbc.all()
    for atoms in by_kind["slab"]:
        assert atoms.pbc.tolist() == [True, True, False]


def test_same_seed_same_file_other_seed_or_stream_another(emt_file: Path, tmp_path: Path) -> None:
    again = make_emt_dataset(tmp_path / "again.extxyz", FRAMES, seed=7, **SMALL)
    assert again.read_bytes() == emt_file.read_bytes()
    other_seed = make_emt_dataset(tmp_path / "seed.extxyz", 2, seed=8, kinds=("bulk",), **SMALL)
    other_stream = make_emt_dataset(tmp_path / "stream.extxyz", 2, seed=7, stream=1, kinds=("bulk",), **SMALL)
    first_trajectory = make_emt_dataset(tmp_path / "first.extxyz", 2, seed=7, kinds=("bulk",), **SMALL)
    contents = {path.read_bytes() for path in (other_seed, other_stream, first_trajectory)}
    assert len(contents) == 3


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kinds"):
        make_emt_dataset(tmp_path / "x.extxyz", 1, 0, kinds=("liquid",))
    with pytest.raises(ValueError, match="positive"):
        make_emt_dataset(tmp_path / "x.extxyz", 0, 0)
    assert not list(tmp_path.iterdir())  # nothing written, not even a partial file


def test_command_line_writes_train_and_validation_files(tmp_path: Path) -> None:
    train, valid = tmp_path / "train.extxyz", tmp_path / "valid.extxyz"
    command = [
        sys.executable, "-m", "equiformer.atomistic.datasets", "emt", "--frames", "3", "--seed", "1",
        "--out", str(train), "--valid-frames", "2", "--valid-out", str(valid),
        "--frames-per-trajectory", "3", "--kinds", "vacancy",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # progress goes to stderr only
    train_frames, valid_frames = ase_io.read(train, ":"), ase_io.read(valid, ":")
    assert len(train_frames) == 3 and len(valid_frames) == 2
    # the validation stream is not the training one
    assert not np.allclose(train_frames[0].positions[:3], valid_frames[0].positions[:3])


def test_command_line_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "equiformer.atomistic.datasets", "--help"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0 and "emt" in result.stdout and "xtb" in result.stdout


def test_xtb_without_tblite_names_the_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "tblite", None)  # makes "import tblite..." fail as if absent
    monkeypatch.setitem(sys.modules, "tblite.ase", None)
    with pytest.raises(ImportError, match="pip install tblite"):
        make_xtb_dataset(tmp_path / "x.extxyz", 1, 0)


def test_xtb_labels_are_a_fresh_gfn2_evaluation(tmp_path: Path) -> None:
    pytest.importorskip("tblite")
    import torch
    from tblite.ase import TBLite

    threads = torch.get_num_threads()
    path = make_xtb_dataset(tmp_path / "water.extxyz", 2, seed=0, molecules=("H2O",), equilibration_steps=5, stride=3)
    assert torch.get_num_threads() == threads  # the single OpenMP thread used for tblite is undone
    frames = ase_io.read(path, ":")
    assert len(frames) == 2
    for atoms in frames:
        assert atoms.get_chemical_formula() == "H2O" and not atoms.pbc.any()
        assert "stress" not in atoms.calc.results
        fresh = atoms.copy()
        fresh.calc = TBLite(method="GFN2-xTB", verbosity=0)
        np.testing.assert_allclose(atoms.get_potential_energy(), fresh.get_potential_energy(), rtol=0, atol=1e-8)
        np.testing.assert_allclose(atoms.get_forces(), fresh.get_forces(), rtol=0, atol=FORCE_FILE_PRECISION)
