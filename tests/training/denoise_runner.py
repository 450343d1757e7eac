"""Run denoise.py in this process or in a subprocess, with a model small enough for tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from equiformer.training import main
from equiformer.training.checkpoint import CHECKPOINT_NAME

REPO = Path(__file__).resolve().parents[2]
DENOISE = REPO / "denoise.py"

TINY = [
    "--dim", "8,4", "--heads", "2", "--dim-head", "4", "--depth", "1", "--num-neighbors", "8",
    "--adj-degrees", "2", "--crop", "10", "--batch-size", "2", "--val-proteins", "3",
    "--warmup-steps", "2", "--log-every", "1", "--no-progress", "--threads", "1",
]
"""A ~10k-parameter model on 10-residue crops: tens of milliseconds per step. One thread:
a tiny model gains nothing from two, and one thread does not stall when the cores are busy."""


def args(out: Path, *extra: str) -> list[str]:
    return ["--out", str(out), *TINY, *extra]


def run_inline(out: Path, *extra: str) -> int:
    """``denoise.py`` in this process; returns its exit status."""
    return main(args(out, *extra))


def popen(out: Path, *extra: str, launcher: list[str] | None = None) -> subprocess.Popen:
    """``denoise.py`` as a child process (text stdout/stderr pipes)."""
    command = [*(launcher or [sys.executable]), str(DENOISE), *args(out, *extra)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def checkpoint(out: Path) -> dict:
    return torch.load(out / CHECKPOINT_NAME, map_location="cpu", weights_only=True)


def wait_for_checkpoint(out: Path, process: subprocess.Popen, timeout: float = 60.0) -> None:
    """Block until the child has written its first checkpoint (it must still be running)."""
    deadline = time.monotonic() + timeout
    while not (out / CHECKPOINT_NAME).exists():
        if process.poll() is not None:
            raise AssertionError(f"child ended early:\n{process.communicate()[1]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("no checkpoint within the timeout")
        time.sleep(0.05)


def assert_same_weights(first: dict, second: dict) -> None:
    """Bitwise-equal model weights and optimizer state of two checkpoints."""
    assert first["step"] == second["step"]
    assert first["model"].keys() == second["model"].keys()
    for name, tensor in first["model"].items():
        assert torch.equal(tensor, second["model"][name]), name
    for index, state in first["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, second["optimizer"]["state"][index][key]), (index, key)
