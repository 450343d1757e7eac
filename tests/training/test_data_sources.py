"""--data and --sidechainnet: the chains trained on, and errors that name the bad path."""

from __future__ import annotations

import dataclasses
import json
import pickle

import numpy as np
import pytest

from denoise_runner import run_inline
from equiformer.data import backbone_to_pdb, load_embedded
from equiformer.training import TrainConfig, build_parser
from equiformer.training.config import resolve
from equiformer.training.data import load_backbones


@pytest.fixture(scope="module")
def chains():
    """Four real, complete chains of four different entries."""
    picked, entries = [], set()
    for chain in load_embedded():
        if chain.atom_mask.all() and chain.entry not in entries and len(chain) < 150:
            picked.append(chain)
            entries.add(chain.entry)
        if len(picked) == 4:
            return picked
    raise AssertionError("expected four complete chains")


@pytest.fixture
def folder(tmp_path, chains):
    """Four good PDB files (two gzipped ones would be the same code path) and a broken mmCIF."""
    data = tmp_path / "structures"
    data.mkdir()
    for index, chain in enumerate(chains):
        text = backbone_to_pdb(chain.coords, chain.sequence)
        (data / f"{index + 1}ab{index}.pdb").write_text(text + "END\n")
    (data / "broken.cif").write_text("data_x\nloop_\n_atom_site.id\n_atom_site.Cartn_x\n1\n")
    return data


def test_data_folder_trains_on_its_chains_and_names_the_broken_file(tmp_path, folder, chains):
    with pytest.warns(UserWarning, match=str(folder / "broken.cif")):
        loaded = load_backbones(resolve({"data": str(folder)}))
    assert sorted(b.sequence for b in loaded) == sorted(c.sequence for c in chains)
    for chain in loaded:
        original = next(c for c in chains if c.sequence == chain.sequence)
        np.testing.assert_allclose(chain.coords, original.coords, atol=1e-3)
    with pytest.warns(UserWarning, match="broken.cif"):
        assert run_inline(tmp_path / "out", "--data", str(folder), "--steps", "1") == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["data"] == str(folder)


def test_strict_data_stops_and_names_the_broken_file(tmp_path, folder, capsys):
    assert run_inline(tmp_path / "out", "--data", str(folder), "--strict-data") == 2
    error = capsys.readouterr().err
    assert error.startswith("denoise.py: error:") and str(folder / "broken.cif") in error
    assert not (tmp_path / "out" / "checkpoint.pt").exists()


@pytest.mark.parametrize("flag", ["--data", "--sidechainnet"])
def test_missing_path_is_named(tmp_path, capsys, flag):
    missing = tmp_path / "no" / "such"
    assert run_inline(tmp_path / "out", flag, str(missing)) == 2
    error = capsys.readouterr().err
    assert str(missing) in error and "Traceback" not in error


def test_unreadable_pickle_is_named(tmp_path, capsys):
    bad = tmp_path / "scn.pkl"
    bad.write_bytes(b"this is not a pickle")
    assert run_inline(tmp_path / "out", "--sidechainnet", str(bad)) == 2
    assert f"{bad} is not a readable SidechainNet pickle" in capsys.readouterr().err


def test_sidechainnet_pickle_trains(tmp_path, chains):
    """A 1.0-layout pickle (NaN-padded, 15 atoms per residue) built from the real chains."""
    columns = {"seq": [], "ids": [], "msk": [], "crd": []}
    for index, chain in enumerate(chains):
        crd = np.full((len(chain), 15, 3), np.nan)
        crd[:, :4] = chain.coords
        columns["seq"].append(chain.sequence)
        columns["ids"].append(f"{index + 1}AB{index}_1_A")
        columns["msk"].append("+" * len(chain))
        columns["crd"].append(crd)
    path = tmp_path / "scn.pkl"
    path.write_bytes(pickle.dumps({"train": columns, "settings": {"casp_thinning": 30}}))
    loaded = load_backbones(resolve({"sidechainnet": str(path)}))
    assert [b.sequence for b in loaded] == [c.sequence for c in chains]
    assert run_inline(tmp_path / "out", "--sidechainnet", str(path), "--steps", "1") == 0


def test_help_lists_every_setting():
    text = build_parser().format_help()
    for field in dataclasses.fields(TrainConfig):
        assert "--" + field.name.replace("_", "-") in text
    assert "large preset: 128,64,32" in text


def test_resume_refuses_changed_validation_chains(tmp_path, capsys):
    """Resumed runs promise the validation records of an uninterrupted run: a validation file
    that went missing (or unreadable) must stop --resume, as a missing training file does.
    12 entries, 4 held out; without one of them 3 are held out and training is unchanged."""
    from equiformer.training.data import split

    data = tmp_path / "structures"
    data.mkdir()
    picked = {}
    for chain in load_embedded():
        if chain.atom_mask.all() and 30 <= len(chain) <= 120 and chain.entry not in picked:
            picked[chain.entry] = chain
    for index, chain in enumerate(list(picked.values())[:12]):
        (data / f"{index + 1}ab{chr(97 + index)}.pdb").write_text(backbone_to_pdb(chain.coords, chain.sequence) + "END\n")
    settings = ["--data", str(data), "--val-fraction", "0.3"]
    out = tmp_path / "out"
    assert run_inline(out, *settings, "--steps", "4", "--stop-at-step", "2") == 0
    config = resolve({"data": str(data), "val_fraction": 0.3})
    train, val = split(load_backbones(config), config)
    assert len(val) == 4
    (data / f"{val[0].entry.lower()}.pdb").unlink()
    assert [c.id for c in split(load_backbones(config), config)[0]] == [c.id for c in train]
    capsys.readouterr()
    assert run_inline(out, "--resume") == 2
    assert "the validation chains differ from those of the checkpoint" in capsys.readouterr().err
