"""What a finished run leaves in --out: metrics, plot, example PDB, a weights-only checkpoint."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from denoise_runner import run_inline
from equiformer.data import load_embedded
from equiformer.training import TrainConfig
from equiformer.training.config import resolve
from equiformer.training.data import split
from equiformer.training.metrics import read_metrics

STEPS = 4


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert run_inline(out, "--steps", str(STEPS), "--val-every", "2", "--noise", "0.5") == 0
    return out


def test_metrics_record_every_step_and_each_validation(finished):
    records = read_metrics(finished / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in train] == list(range(1, STEPS + 1))
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 and r["steps_per_s"] > 0 for r in train)
    assert train[0]["lr"] < train[-1]["lr"], "the learning rate warms up"
    assert [r["step"] for r in val] == [2, 4]
    for r in val:
        # noise of σ = 0.5 Å on each coordinate: RMSD ≈ 0.5 * sqrt(3) on average
        assert 0.5 * math.sqrt(3) * 0.8 < r["rmsd_noisy"] < 0.5 * math.sqrt(3) * 1.2
        assert r["chains"] == 3 and r["rmsd_denoised"] > 0
    assert val[0]["rmsd_noisy"] == val[1]["rmsd_noisy"], "validation noise is fixed"
    (end,) = [r for r in records if r["kind"] == "end"]
    assert end["status"] == "finished" and end["step"] == STEPS
    assert len(end["param_digests"]) == 1 and len(end["param_digests"][0]) == 64


def test_curves_png_is_an_image(finished):
    from matplotlib.image import imread

    data = (finished / "curves.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(finished / "curves.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 2 * image.shape[0]
    assert image[..., :3].std() > 0.05, "the plot has content, not a blank canvas"


def test_validation_example_has_truth_noisy_denoised(finished):
    import gemmi
    structure = gemmi.read_structure(str(finished / "validation_example.pdb"))
    assert len(structure) == 3
    models = [np.array([a.pos.tolist() for r in m[0] for a in r]) for m in structure]
    assert models[0].shape == models[1].shape == models[2].shape and models[0].shape[1] == 3
    names = [a.name for r in structure[0][0] for a in r]
    assert names[:4] == ["N", "CA", "C", "O"]
    # model 1 is a real validation chain, in its original frame
    config = resolve({"val_proteins": 3, "crop": 10})
    _, val = split(load_embedded(), config)
    first = val[0]
    sequence = gemmi.one_letter_code([r.name for r in structure[0][0]])
    start = first.sequence.find(sequence)
    assert start >= 0, "model 1 is a window of the first validation chain"
    truth = first.coords[start : start + len(sequence)][first.atom_mask[start : start + len(sequence)]]
    np.testing.assert_allclose(models[0], truth, atol=2e-3)
    noisy_rmsd = np.sqrt(((models[1] - models[0]) ** 2).sum(-1).mean())
    assert 0.2 < noisy_rmsd < 1.5  # σ = 0.5 Å noise, a dozen residues
    assert not np.allclose(models[2], models[1], atol=1e-3), "denoising moved the atoms"


def test_checkpoint_loads_weights_only_and_holds_a_plain_config(finished):
    payload = torch.load(finished / "checkpoint.pt", weights_only=True)
    assert payload["step"] == STEPS
    config = TrainConfig.from_dict(payload["config"])
    assert config.steps == STEPS and config.dim == (8, 4) and config.noise == 0.5
    assert all(isinstance(v, (str, int, float, bool, list, type(None))) for v in payload["config"].values())
    assert isinstance(payload["model"]["token_emb.weight"], torch.Tensor)
    assert payload["optimizer"]["state"], "the optimizer's moments are saved"
    assert "torch" in payload["rng"]
    assert payload["order"]["cursor"] == STEPS * 2 and payload["order"]["epoch"] == 1
