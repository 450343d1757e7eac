"""torchrun on the CPU (gloo): ranks stay in sync and match one process with the whole batch."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.distributed as dist

from denoise_runner import checkpoint, popen, run_inline
from equiformer.training.metrics import METRICS_NAME, read_metrics

pytestmark = pytest.mark.skipif(not dist.is_gloo_available(), reason="needs torch with gloo")

STEPS = ["--steps", "4", "--val-every", "2", "--dtype", "float64"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def losses(out, key="loss"):
    return [r[key] for r in read_metrics(out / METRICS_NAME) if r["kind"] == "train"]


def assert_close_weights(first: dict, second: dict) -> None:
    for name, tensor in first["model"].items():
        torch.testing.assert_close(tensor, second["model"][name], rtol=1e-9, atol=1e-11,
                                   msg=lambda m: f"{name}: {m}")


def test_two_ranks_equal_one_process_with_the_doubled_batch(tmp_path):
    """float64, so that "equal" means equal up to the rounding of a different summation order."""
    child = popen(tmp_path / "ddp", *STEPS, "--batch-size", "2", launcher=TORCHRUN)
    assert run_inline(tmp_path / "single", *STEPS, "--batch-size", "4") == 0
    assert run_inline(tmp_path / "accumulated", *STEPS, "--batch-size", "2", "--accumulate", "2") == 0
    stdout, stderr = child.communicate(timeout=120)
    assert child.returncode == 0, stderr
    assert stdout.count("data: ") == 1, "only rank 0 prints"

    end = [r for r in read_metrics(tmp_path / "ddp" / METRICS_NAME) if r["kind"] == "end"][0]
    assert len(end["param_digests"]) == 2
    assert end["param_digests"][0] == end["param_digests"][1], "ranks hold bitwise-equal weights"

    reference = losses(tmp_path / "single")
    assert len(reference) == 4 and reference[0] != reference[-1]
    for other in ("ddp", "accumulated"):
        torch.testing.assert_close(losses(tmp_path / other), reference, rtol=1e-10, atol=0)
        # AdamW hides a wrongly scaled gradient in the weights, the gradient norm does not
        torch.testing.assert_close(losses(tmp_path / other, "grad_norm"),
                                   losses(tmp_path / "single", "grad_norm"), rtol=1e-9, atol=0)
        assert_close_weights(checkpoint(tmp_path / other), checkpoint(tmp_path / "single"))
    val = {name: [r["rmsd_denoised"] for r in read_metrics(tmp_path / name / METRICS_NAME)
                  if r["kind"] == "val"] for name in ("ddp", "single")}
    torch.testing.assert_close(val["ddp"], val["single"], rtol=1e-9, atol=0)


def test_resume_refuses_another_world_size(tmp_path, capsys):
    assert run_inline(tmp_path, *STEPS, "--stop-at-step", "1") == 0
    state = checkpoint(tmp_path)
    state["world_size"] = 2  # as if written by a two-process run
    torch.save(state, tmp_path / "checkpoint.pt")
    capsys.readouterr()
    assert run_inline(tmp_path, "--resume") == 2
    assert "written by 2 processes and this run has 1" in capsys.readouterr().err


def test_a_setup_error_only_rank_0_meets_stops_every_rank(tmp_path):
    """Rank 0 alone writes the output folder; when that fails (here config.json cannot be
    written), every rank must stop with a clear error, not train on into a broken all-reduce."""
    out = tmp_path / "run"
    (out / "config.json").mkdir(parents=True)  # a folder where rank 0 writes the file
    child = popen(out, *STEPS, "--batch-size", "2", launcher=TORCHRUN)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode != 0
    assert "denoise.py: error: --out" in stderr and "cannot write the run's files" in stderr
    assert "denoise.py: error: rank 0 could not set up --out" in stderr
    assert "Connection closed" not in stderr and "fit(" not in stderr
