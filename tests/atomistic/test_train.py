"""python -m equiformer.atomistic.train: outputs, learning, bitwise resume, torchrun, bad data."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("ase")
pytest.importorskip("vesin")
pytest.importorskip("matplotlib")

import ase.io
import ase.stress
from ase.calculators.singlepoint import SinglePointCalculator

from equiformer.atomistic import EquiformerCalculator, Potential
from equiformer.atomistic.datasets import make_emt_dataset
from equiformer.atomistic.structures import read_structures
from equiformer.atomistic.train import main
from equiformer.atomistic.training_loop import predict

REPO = Path(__file__).resolve().parents[2]
TINY = ["--dim", "8", "4", "4", "--heads", "2", "--dim-head", "4", "--depth", "1", "--cutoff", "3.0",
        "--batch-size", "2", "--warmup-steps", "5", "--lr", "0.01", "--threads", "1"]
"""~11k parameters with first-shell neighbours only: a few hundredths of a second per step."""
TIMING = ("steps_per_s", "elapsed_s")  # the only fields of metrics.jsonl that may differ between runs


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """16 training frames (bulk, alloy, vacancy and slab: stresses on the periodic ones and a
    slab without a usable one) and 4 validation frames of another stream."""
    folder = tmp_path_factory.mktemp("emt")
    small = {"frames_per_trajectory": 4, "equilibration_steps": 5, "stride": 2}
    return {
        "train": make_emt_dataset(folder / "train.extxyz", 16, seed=3, **small),
        "valid": make_emt_dataset(folder / "valid.extxyz", 4, seed=3, stream=1, kinds=("bulk", "alloy"), **small),
    }


def train(out: Path, data: dict[str, Path], *extra: str) -> int:
    """The command line in this process; returns its exit status."""
    return main(["--data", str(data["train"]), "--out", str(out), *TINY, *extra])


def command(out: Path, data: dict[str, Path], *extra: str, launcher: tuple[str, ...] = ()) -> list[str]:
    return [*(launcher or (sys.executable,)), "-m", "equiformer.atomistic.train", "--data", str(data["train"]),
            "--out", str(out), *TINY, *extra]


def spawn(arguments: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(arguments, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def checkpoint(out: Path) -> dict:
    return torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)


def records(out: Path, kind: str | None = None) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    found = [json.loads(line) for line in lines]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in found if kind in (None, r["kind"])]


# ---------------------------------------------------------------------------------- a short run


@pytest.fixture(scope="module")
def short_run(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    assert train(out, data, "--valid", str(data["valid"]), "--steps", "30", "--valid-every", "15",
                 "--log-every", "1", "--dtype", "float64") == 0
    return out


def test_short_run_writes_every_output(short_run):
    for name in ("checkpoint.pt", "potential.pt", "metrics.jsonl", "curves.png", "parity.png", "config.json"):
        assert (short_run / name).stat().st_size > 0, name
    assert not list(short_run.glob(".tmp-*"))
    saved = checkpoint(short_run)  # weights_only: nothing but tensors and primitives
    assert saved["step"] == 30 and saved["program"] == "equiformer.atomistic.train"
    assert json.loads((short_run / "config.json").read_text())["steps"] == 30
    potential = Potential.load(short_run / "potential.pt")
    assert potential.dtype == torch.float64 and potential.elements == (29, 79)
    for name, value in potential.state_dict().items():  # the exported model is the EMA one
        assert torch.equal(value, saved["ema"][name]), name
    assert any(not torch.equal(saved["ema"][k], saved["model"][k]) for k in saved["model"])
    [end] = records(short_run, "end")
    assert end["status"] == "finished"


def test_calculator_reproduces_the_last_validation_record(short_run, data):
    """Re-evaluating the validation frames with ASE through potential.pt gives the numbers logged."""
    last = records(short_run, "val")[-1]
    assert last["step"] == 30
    calculator = EquiformerCalculator(short_run / "potential.pt")
    energy, forces, stress, labels = [], [], [], []
    for atoms in ase.io.read(data["valid"], ":"):
        reference = atoms.calc.results
        atoms.calc = calculator
        energy.append((atoms.get_potential_energy() - reference["energy"]) / len(atoms))
        forces.append(atoms.get_forces() - reference["forces"])
        stress.append(atoms.get_stress(voigt=False) - ase.stress.voigt_6_to_full_3x3_stress(reference["stress"]))
        labels.append(reference["forces"])
    energy, forces, stress = 1e3 * np.array(energy), 1e3 * np.concatenate(forces), 1e3 * np.array(stress)
    expected = {
        "energy_mae": np.abs(energy).mean(), "energy_rmse": np.sqrt((energy**2).mean()),
        "forces_mae": np.abs(forces).mean(), "forces_rmse": np.sqrt((forces**2).mean()),
        "stress_mae": np.abs(stress).mean(), "stress_rmse": np.sqrt((stress**2).mean()),
        "forces_rms": 1e3 * np.sqrt((np.concatenate(labels) ** 2).mean()),
    }
    for key, value in expected.items():
        assert last[key] == pytest.approx(value, rel=1e-7), key
    assert last["forces_mae"] < last["forces_rms"]


def test_loss_decreases_over_thirty_steps(short_run):
    losses = [r["loss"] for r in records(short_run, "train")]
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    val = records(short_run, "val")
    assert val[-1]["loss"] < val[0]["loss"]


def test_a_batch_mixing_slabs_and_crystals_is_predicted_in_batch_order(data):
    """Stresses exist for fully periodic structures only: such a batch runs in two passes, whose
    outputs must land on the right structures and atoms."""
    structures = read_structures(data["train"])
    torch.manual_seed(0)
    potential = Potential(structures.elements, 3.0, dim=8, depth=1, heads=2, dim_head=4).double()
    slabs = (~structures.has_stress).nonzero().flatten().tolist()
    crystals = structures.has_stress.nonzero().flatten().tolist()
    indices = [slabs[0], crystals[0], slabs[1], crystals[1]]
    batch = structures.select(indices)
    out = predict(potential, batch, stress=True, create_graph=False)
    for k, g in enumerate(indices):
        one = structures.select([g])
        alone = potential(one.numbers, one.positions, one.cell, one.pbc, forces=True, stress=bool(one.has_stress[0]))
        atoms = batch.atom_index([k])
        torch.testing.assert_close(out["energy"][k], alone["energy"][0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out["forces"][atoms], alone["forces"], rtol=1e-10, atol=1e-12)
        expected = alone["stress"][0] if "stress" in alone else torch.zeros(3, 3, dtype=torch.float64)
        torch.testing.assert_close(out["stress"][k], expected, rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------------------------- resume


def test_sigkill_then_resume_equals_an_uninterrupted_run(data, tmp_path):
    """Killed (SIGKILL) after the checkpoint of step 5, resumed: bitwise the same final weights,
    EMA, optimizer state and metrics records (timings aside) as a run never interrupted."""
    common = ["--steps", "40", "--save-every", "5", "--valid-every", "7", "--log-every", "3"]
    killed = tmp_path / "killed"
    child = spawn(command(killed, data, *common))
    deadline = time.monotonic() + 120
    while not (killed / "checkpoint.pt").exists():
        assert child.poll() is None, child.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint within two minutes"
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    step = checkpoint(killed)["step"]
    assert 5 <= step < 40 and step % 5 == 0
    assert train(killed, data, "--resume") == 0

    straight = tmp_path / "straight"
    assert train(straight, data, *common) == 0
    resumed, reference = checkpoint(killed), checkpoint(straight)
    assert resumed["step"] == reference["step"] == 40
    for part in ("model", "ema"):
        for name, value in reference[part].items():
            assert torch.equal(resumed[part][name], value), (part, name)
    for index, state in reference["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(resumed["optimizer"]["state"][index][key], value), (index, key)
    assert records(killed) == records(straight)


def test_max_time_stops_validates_and_saves(data, tmp_path):
    assert train(tmp_path, data, "--steps", "100000", "--max-time", "0.003") == 0
    [end] = records(tmp_path, "end")
    step = checkpoint(tmp_path)["step"]
    assert end["status"] == "stopped" and 1 <= step == end["step"] < 100000
    assert records(tmp_path, "val")[-1]["step"] == step
    assert (tmp_path / "potential.pt").exists()


# ---------------------------------------------------------------------------------- torchrun


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs torch with gloo")
def test_two_processes_train_like_one_with_twice_the_batch(data, tmp_path):
    common = ["--steps", "4", "--valid-every", "2", "--log-every", "1", "--dtype", "float64"]
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    child = spawn(command(tmp_path / "ddp", data, *common, "--batch-size", "2", launcher=torchrun))
    assert train(tmp_path / "single", data, *common, "--batch-size", "4") == 0
    stdout, stderr = child.communicate(timeout=300)
    assert child.returncode == 0, stderr
    assert stdout.count("data: ") == 1, "only rank 0 prints"
    ddp, single = checkpoint(tmp_path / "ddp"), checkpoint(tmp_path / "single")
    for part in ("model", "ema"):
        for name, value in single[part].items():
            torch.testing.assert_close(ddp[part][name], value, rtol=1e-9, atol=1e-10)
    [end] = records(tmp_path / "ddp", "end")
    assert end["param_digests"][0] == end["param_digests"][1], "ranks hold bitwise-equal weights"
    for kind, keys in (("train", ("loss", "grad_norm")), ("val", ("loss", "energy_mae", "forces_mae", "stress_mae"))):
        for a, b in zip(records(tmp_path / "ddp", kind), records(tmp_path / "single", kind), strict=True):
            for key in keys:
                assert a[key] == pytest.approx(b[key], rel=1e-9), (kind, key)


# ---------------------------------------------------------------------------------- bad data


def _rewrite(source: Path, target: Path, change) -> Path:
    """``source``'s frames, each passed through ``change(k, atoms, results)``, written to ``target``."""
    frames = ase.io.read(source, ":")
    for k, atoms in enumerate(frames):
        results = dict(atoms.calc.results)
        change(k, atoms, results)
        atoms.calc = SinglePointCalculator(atoms, **results)
    ase.io.write(target, frames, format="extxyz")
    return target


def _drop(frame: int, key: str):
    return lambda k, atoms, results: results.pop(key) if k == frame else None


def _nan_force(k, atoms, results):
    if k == 2:
        results["forces"] = results["forces"].copy()
        results["forces"][1, 0] = np.nan


def _silver(k, atoms, results):
    if k == 1:
        atoms.numbers[0] = 47


@pytest.mark.parametrize("which, change, message", [
    ("train", _drop(2, "forces"), "train-bad.extxyz: frame 2: no forces label"),
    ("train", _drop(1, "energy"), "train-bad.extxyz: frame 1: no energy label"),
    ("train", _drop(3, "stress"), "train-bad.extxyz: frame 3: periodic but no stress label, while frame 0 has one"),
    ("train", _nan_force, "train-bad.extxyz: frame 2: its forces hold NaN"),
    ("train", "empty", "train-bad.extxyz: the file is empty"),
    ("valid", _silver, "valid-bad.extxyz: frame 1: element Ag (Z=47) is not in the training data"),
], ids=["no-forces", "no-energy", "mixed-stress", "nan", "empty", "unknown-element"])
def test_bad_data_is_one_line_naming_file_and_frame(data, tmp_path, capsys, which, change, message):
    bad = tmp_path / f"{which}-bad.extxyz"
    if change == "empty":
        bad.write_text("")
    else:
        _rewrite(data[which], bad, change)
    paths = {**data, which: bad}
    status = main(["--data", str(paths["train"]), "--valid", str(paths["valid"]), "--out", str(tmp_path / "run"), *TINY])
    error = capsys.readouterr().err
    assert status == 2
    assert error.startswith("equiformer.atomistic.train: error: ") and error.count("\n") == 1, error
    assert str(tmp_path) in error and message in error, error
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_bad_data_in_a_subprocess_exits_without_a_traceback(data, tmp_path):
    bad = _rewrite(data["train"], tmp_path / "bad.extxyz", _drop(0, "energy"))
    child = spawn(command(tmp_path / "run", {"train": bad}))
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 2
    assert "Traceback" not in stderr and f"{bad}: frame 0: no energy label" in stderr


def test_mmax_flag_reaches_the_model():
    from equiformer.atomistic.train import PotentialTrainConfig
    from equiformer.training.config import ConfigError

    assert PotentialTrainConfig().model_keywords()["mmax"] is None  # every order by default
    assert PotentialTrainConfig(num_degrees=4, dim=(16,), mmax=1).model_keywords()["mmax"] == 1
    with pytest.raises(ConfigError, match=r"--mmax must be >= 0, or -1 for every order, got -2"):
        PotentialTrainConfig(mmax=-2)
