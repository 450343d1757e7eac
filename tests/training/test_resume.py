"""Interrupted and resumed runs end exactly where uninterrupted ones do (CPU, float32)."""

from __future__ import annotations

import os
import signal

import pytest
import torch

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


class Killed(BaseException):
    """Stands in for SIGKILL: no handler runs, nothing is saved, the process just ends."""


def kill_after(monkeypatch, step: int, action=None) -> None:
    """Make the loop's ``train_step`` end the run (or call ``action``) right after ``step``."""
    import equiformer.training.loop as loop

    original = loop.train_step

    def wrapped(session):
        result = original(session)
        if session.step + 1 == step:
            if action is None:
                raise Killed
            action()
        return result

    monkeypatch.setattr(loop, "train_step", wrapped)


def train_records(out):
    return [(r["step"], r["loss"]) for r in read_metrics(out / METRICS_NAME)
            if r["kind"] == "train"]


def test_killed_between_checkpoints_logs_what_a_straight_run_logs(tmp_path, monkeypatch):
    """The running mean of the training loss is in the checkpoint: records after a kill and
    --resume have the straight run's steps and values (they used to miss steps 5-6)."""
    common = ["--steps", STEPS, "--checkpoint-every", "3", "--log-every", "4"]
    assert run_inline(tmp_path / "straight", *common, "--stop-at-step", "8") == 0
    out = tmp_path / "killed"
    kill_after(monkeypatch, 5)  # the last checkpoint is step 3, the last record step 4
    with pytest.raises(Killed):
        run_inline(out, *common)
    monkeypatch.undo()
    assert checkpoint(out)["step"] == 3
    assert run_inline(out, "--resume", *common[2:], "--stop-at-step", "8") == 0
    assert train_records(out) == train_records(tmp_path / "straight")
    assert [s for s, _ in train_records(out)] == [4, 8]


def test_stops_between_log_steps_leave_a_partial_record_that_resume_replaces(tmp_path):
    common = ["--steps", STEPS, "--log-every", "4"]  # repeated on resume: TINY logs every step
    assert run_inline(tmp_path / "straight", *common, "--stop-at-step", "8") == 0
    out = tmp_path / "stopped"
    assert run_inline(out, *common, "--stop-at-step", "2") == 0
    [partial] = [r for r in read_metrics(out / METRICS_NAME) if r["kind"] == "train"]
    assert partial["step"] == 2 and partial["partial"] is True  # visible while stopped
    assert run_inline(out, "--resume", *common[2:], "--stop-at-step", "6") == 0
    assert run_inline(out, "--resume", *common[2:], "--stop-at-step", "8") == 0
    assert train_records(out) == train_records(tmp_path / "straight")


def test_overwrite_killed_early_leaves_no_old_checkpoint(tmp_path, monkeypatch):
    """--overwrite first replaces the old checkpoint with its own step-0 one, so --resume
    after an early kill starts the new run, not the old one (whose history is gone)."""
    out = tmp_path / "run"
    assert run_inline(out, "--steps", STEPS, "--stop-at-step", "3", "--val-every", "1") == 0
    assert (out / "validation_example.pdb").exists()
    kill_after(monkeypatch, 2)
    with pytest.raises(Killed):
        run_inline(out, "--steps", STEPS, "--overwrite", "--lr", "0.01")
    monkeypatch.undo()
    saved = checkpoint(out)
    assert (saved["step"], saved["config"]["lr"]) == (0, 0.01)
    assert not (out / "validation_example.pdb").exists() and not (out / "curves.png").exists()
    assert run_inline(out, "--resume", "--stop-at-step", "2") == 0
    assert [s for s, _ in train_records(out)] == [1, 2]
    fresh = tmp_path / "fresh"
    assert run_inline(fresh, "--steps", STEPS, "--lr", "0.01", "--stop-at-step", "2") == 0
    assert_same_weights(checkpoint(out), checkpoint(fresh))


def sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def val_records(out):
    return [(r["step"], r["rmsd_denoised"]) for r in read_metrics(out / METRICS_NAME)
            if r["kind"] == "val"]


def test_signal_in_the_last_step_finishes_the_run(tmp_path, monkeypatch, capsys):
    """All steps are trained: validate, summarise and exit 0 (it used to exit 130 without the
    final validation, and --resume then trained nothing and never validated)."""
    kill_after(monkeypatch, 3, sigterm)
    assert run_inline(tmp_path, "--steps", "3", "--val-every", "100") == 0
    assert "all steps are trained" in capsys.readouterr().out
    assert [s for s, _ in val_records(tmp_path)] == [3]
    [end] = [r for r in read_metrics(tmp_path / METRICS_NAME) if r["kind"] == "end"]
    assert end["status"] == "finished"
    assert checkpoint(tmp_path)["validation_due"] is False


def test_validation_skipped_by_a_signal_runs_on_resume(tmp_path, monkeypatch):
    common = ["--steps", "4", "--val-every", "2"]
    assert run_inline(tmp_path / "straight", *common) == 0
    out = tmp_path / "interrupted"
    kill_after(monkeypatch, 2, sigterm)
    assert run_inline(out, *common) == 130
    monkeypatch.undo()
    assert val_records(out) == [] and checkpoint(out)["validation_due"] is True
    assert run_inline(out, "--resume") == 0
    assert val_records(out) == val_records(tmp_path / "straight")
    assert [s for s, _ in val_records(out)] == [2, 4]


def test_old_checkpoint_of_a_run_missing_its_final_validation(tmp_path):
    """Checkpoints from before train_window/validation_due still resume; a finished run whose
    final validation is not in metrics.jsonl (the old last-step interrupt) gets it."""
    assert run_inline(tmp_path, "--steps", "2", "--val-every", "100") == 0
    old = {k: v for k, v in checkpoint(tmp_path).items()
           if k not in ("train_window", "validation_due")}
    torch.save(old, tmp_path / "checkpoint.pt")
    path = tmp_path / METRICS_NAME
    kept = [line for line in path.read_text().splitlines() if '"kind": "val"' not in line]
    path.write_text("\n".join(kept) + "\n")
    assert run_inline(tmp_path, "--resume") == 0
    assert [s for s, _ in val_records(tmp_path)] == [2]
    assert run_inline(tmp_path, "--resume") == 0  # done now: not validated again
    assert [s for s, _ in val_records(tmp_path)] == [2]


def sigint() -> None:
    os.kill(os.getpid(), signal.SIGINT)


def test_second_ctrl_c_during_the_final_validation_keeps_the_trained_steps(tmp_path, monkeypatch):
    """Ctrl-C in the last step lets the final validation run; a second Ctrl-C aborts it.  The
    trained last step must already be saved (the last checkpoint was step 2), with its
    validation due, so --resume only validates."""
    import equiformer.training.loop as loop

    kill_after(monkeypatch, 5, sigint)
    validate = loop.validate
    monkeypatch.setattr(loop, "validate", lambda session: sigint())  # the second Ctrl-C
    with pytest.raises(KeyboardInterrupt):
        run_inline(tmp_path, "--steps", "5", "--checkpoint-every", "2", "--val-every", "100")
    monkeypatch.undo()
    saved = checkpoint(tmp_path)
    assert (saved["step"], saved["validation_due"]) == (5, True)
    assert loop.validate is validate
    assert run_inline(tmp_path, "--resume") == 0
    assert [s for s, _ in val_records(tmp_path)] == [5]
    assert checkpoint(tmp_path)["validation_due"] is False
