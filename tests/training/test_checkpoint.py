"""Damaged or foreign checkpoints stop --resume with one line naming the file and the cause."""

from __future__ import annotations

import pytest
import torch

from denoise_runner import checkpoint, run_inline
from equiformer.training.checkpoint import CHECKPOINT_NAME


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    out = tmp_path_factory.mktemp("base")
    assert run_inline(out, "--steps", "10", "--stop-at-step", "2") == 0
    return checkpoint(out)


def _without(key):
    return lambda payload: {k: v for k, v in payload.items() if k != key}


def _replace(key, **values):
    return lambda payload: {**payload, key: {**payload[key], **values}}


def _bad_weight(payload):
    model = dict(payload["model"])
    model[next(iter(model))] = torch.zeros(3)
    return {**payload, "model": model}


@pytest.mark.parametrize("damage, message", [
    (_without("config"), "is incomplete: it has no config"),
    (_without("rng"), "is incomplete: it has no rng"),
    (lambda p: {**p, "step": "2"}, "is damaged: step is a str"),
    (_bad_weight, "its model weights cannot be loaded into this run (RuntimeError: Error(s) in loading"),
    (_replace("order", cursor=10**6), "data-order cursor is 1000000, expected 0.."),
    (_replace("order", cursor=-1), "data-order cursor is -1"),
    (lambda p: _replace("order", order=torch.zeros_like(p["order"]["order"]))(p),
     "data order is not a permutation of"),
    (_replace("order", generator=torch.zeros(3, dtype=torch.uint8)), "generator state is invalid"),
    (_replace("rng", torch=torch.zeros(3, dtype=torch.uint8)), "its RNG state cannot be loaded"),
    (lambda p: {**p, "optimizer": {}}, "its optimizer state cannot be loaded"),
    (lambda p: {**p, "train_window": {"steps": 2}}, "training-loss window is damaged"),
    (_replace("config", depth=-3), "is not one this version reads: --depth must be >= 1"),
])
def test_damaged_checkpoint_is_a_setup_error(tmp_path, capsys, good, damage, message):
    torch.save(damage(good), tmp_path / CHECKPOINT_NAME)
    assert run_inline(tmp_path, "--resume") == 2
    error = capsys.readouterr().err
    assert error.startswith("denoise.py: error: ")
    assert str(tmp_path / CHECKPOINT_NAME) in error and message in error, error


@pytest.mark.parametrize("layout, message", [
    ("out-is-a-file", "is a file, not a folder"),
    ("out-under-a-file", "cannot be made: "),
    ("config-json-is-a-folder", "cannot write the run's files there"),
], ids=["out-is-a-file", "out-under-a-file", "config-json-is-a-folder"])
def test_unusable_out_folder_is_a_setup_error(tmp_path, capsys, layout, message):
    """One line naming --out, not a traceback (and for the first two, before any data loads)."""
    target = {"out-is-a-file": tmp_path / "f", "out-under-a-file": tmp_path / "f" / "run",
              "config-json-is-a-folder": tmp_path / "run"}[layout]
    if layout == "config-json-is-a-folder":
        (target / "config.json").mkdir(parents=True)
    else:
        (tmp_path / "f").write_text("a file")
    assert run_inline(target, "--steps", "1") == 2
    error = capsys.readouterr().err
    assert error.startswith("denoise.py: error: --out ") and message in error, error


def test_diverged_loss_is_one_line_not_a_traceback(tmp_path, capsys):
    """A NaN/inf loss ends the run with status 1 and one line naming the step and the knobs."""
    assert run_inline(tmp_path, "--steps", "2", "--noise", "1e30") == 1
    error = capsys.readouterr().err
    assert error.startswith("denoise.py: error: training loss is ") and "Traceback" not in error, error
    assert "at step 1: lower --lr (or --noise)" in error
