"""Interrupted and resumed runs end exactly where uninterrupted ones do (CPU, float32)."""

from __future__ import annotations

import signal

from denoise_runner import (
    assert_same_weights,
    checkpoint,
    popen,
    run_inline,
    wait_for_checkpoint,
)
from equiformer.training.metrics import METRICS_NAME, read_metrics

STEPS = "40"  # the schedule's length; the runs here stop earlier with --stop-at-step


def test_stopped_and_resumed_equals_straight(tmp_path):
    straight_out, out = tmp_path / "straight", tmp_path / "stopped"
    assert run_inline(straight_out, "--steps", STEPS, "--stop-at-step", "6") == 0
    assert run_inline(out, "--steps", STEPS, "--stop-at-step", "3") == 0
    assert checkpoint(out)["step"] == 3
    assert run_inline(out, "--resume", "--stop-at-step", "6") == 0
    resumed, straight = checkpoint(out), checkpoint(straight_out)
    assert_same_weights(resumed, straight)
    assert resumed["order"]["cursor"] == straight["order"]["cursor"] == 12
    assert resumed["scheduler"]["last_epoch"] == 6
    train_steps = [r["step"] for r in read_metrics(out / METRICS_NAME) if r["kind"] == "train"]
    assert train_steps == [1, 2, 3, 4, 5, 6]


def test_sigint_saves_then_resume_matches_straight(tmp_path):
    out = tmp_path / "interrupted"
    child = popen(out, "--steps", "100000", "--checkpoint-every", "2")
    wait_for_checkpoint(out, child)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 130, stderr
    assert "SIGINT received" in stderr and "Traceback" not in stderr
    step = checkpoint(out)["step"]
    assert step >= 2
    assert run_inline(out, "--resume", "--stop-at-step", str(step + 2)) == 0
    assert checkpoint(out)["step"] == step + 2
    straight = tmp_path / "straight"
    assert run_inline(straight, "--steps", "100000", "--stop-at-step", str(step + 2)) == 0
    assert_same_weights(checkpoint(out), checkpoint(straight))


def test_sigkill_after_checkpoint_resumes_from_it(tmp_path, capsys):
    child = popen(tmp_path, "--steps", "100000", "--checkpoint-every", "3")
    wait_for_checkpoint(tmp_path, child)
    child.kill()  # SIGKILL: no handler runs, whatever was being written stays as it was
    child.communicate(timeout=30)
    step = checkpoint(tmp_path)["step"]
    assert step >= 3 and step % 3 == 0
    before = read_metrics(tmp_path / METRICS_NAME)
    # what a kill in the middle of a write leaves behind (the kill above rarely lands there)
    (tmp_path / ".tmp-checkpoint.pt.12345.abcd").write_bytes(b"half a checkpoint")
    assert run_inline(tmp_path, "--resume", "--stop-at-step", str(step + 1)) == 0
    assert f"resumed from step {step} of 100000" in capsys.readouterr().out
    assert checkpoint(tmp_path)["step"] == step + 1
    assert not list(tmp_path.glob(".tmp-*")), "temporary files of the killed run must go"
    records = read_metrics(tmp_path / METRICS_NAME)
    train_steps = [r["step"] for r in records if r["kind"] == "train"]
    assert train_steps == list(range(1, step + 2)), "records after the checkpoint are redone once"
    assert len(before) >= step  # the killed run had logged its steps up to the checkpoint


def test_resume_with_changed_setting_is_refused(tmp_path, capsys):
    assert run_inline(tmp_path, "--steps", STEPS, "--stop-at-step", "1") == 0
    capsys.readouterr()
    assert run_inline(tmp_path, "--resume", "--lr", "0.5", "--depth", "2") == 2
    error = capsys.readouterr().err
    assert "lr: checkpoint has 0.003, this run asks for 0.5" in error
    assert "depth: checkpoint has 1, this run asks for 2" in error
    assert checkpoint(tmp_path)["step"] == 1  # untouched
    # settings about this invocation only may change
    assert run_inline(tmp_path, "--resume", "--stop-at-step", "2", "--val-every", "1",
                      "--device", "cpu", "--threads", "1") == 0
    assert checkpoint(tmp_path)["step"] == 2


def test_resume_needs_a_checkpoint_and_fresh_runs_need_a_free_folder(tmp_path, capsys):
    assert run_inline(tmp_path / "none", "--resume") == 2
    assert f"no checkpoint to resume at {tmp_path / 'none' / 'checkpoint.pt'}" in capsys.readouterr().err
    assert run_inline(tmp_path, "--steps", "1") == 0
    assert run_inline(tmp_path, "--steps", "1") == 2
    assert "pass --resume to continue" in capsys.readouterr().err
    assert run_inline(tmp_path, "--steps", "2", "--overwrite") == 0
    assert checkpoint(tmp_path)["step"] == 2
