"""Checkpoints that resume bit-for-bit and load with ``torch.load(weights_only=True)``.

A checkpoint holds only tensors and plain containers of primitives (the config is a dict, the
RNG states are tensors), so loading it never unpickles arbitrary objects. Everything that
decides what happens next is in it: weights, optimizer, scheduler, step, the data-order
generator and the global RNGs of torch, CUDA, numpy and Python.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .config import SetupError
from .files import atomic_path

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1
"""Format 1 gained optional keys later (``train_window``, ``validation_due``,
``val_fingerprint``); readers default them, so checkpoints written before they existed still resume."""

REQUIRED_KEYS: tuple[str, ...] = (
    "step", "config", "world_size", "data_fingerprint", "elapsed", "model", "optimizer",
    "scheduler", "order", "rng",
)
KEY_TYPES: dict[str, type | tuple[type, ...]] = {
    "config": dict, "model": dict, "optimizer": dict, "scheduler": dict, "order": dict,
    "rng": dict, "step": int, "world_size": int, "elapsed": (int, float),
}
DENOISE = "denoise.py"
"""The ``program`` of checkpoints without one: ``denoise.py`` writes none."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` plus the format version and RNG states atomically to ``path``."""
    path = Path(path)
    with atomic_path(path) as temporary:
        torch.save({"format_version": FORMAT_VERSION, "rng": capture_rng(), **payload}, temporary)
    return path


def load_checkpoint(
    path: str | Path,
    program: str = DENOISE,
    required: tuple[str, ...] = REQUIRED_KEYS,
    key_types: dict[str, type | tuple[type, ...]] = KEY_TYPES,
) -> dict[str, Any]:
    """Read a checkpoint onto the CPU (weights only); errors name the file and the cause.

    ``program`` is the writer the payload's ``program`` key must name (``denoise.py`` for
    payloads without one), so that one trainer never resumes another's checkpoint; ``required``
    and ``key_types`` are the keys it must have and the types of some of them."""
    path = Path(path)
    if not path.is_file():
        raise SetupError(f"no checkpoint to resume at {path} (run once without --resume first)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle and zipfile raise many types on a damaged file
        raise SetupError(f"cannot read checkpoint {path}: {type(error).__name__}: {error}")
    version = payload.get("format_version") if isinstance(payload, dict) else None
    if version != FORMAT_VERSION:
        raise SetupError(
            f"{path} is not a {program} checkpoint of format {FORMAT_VERSION} (found {version!r})"
        )
    writer = payload.get("program", DENOISE)
    if writer != program:
        raise SetupError(f"{path} is not a {program} checkpoint: {writer} wrote it")
    missing = [key for key in required if key not in payload]
    if missing:
        raise SetupError(f"checkpoint {path} is incomplete: it has no {', '.join(missing)}")
    wrong = [f"{key} is a {type(payload[key]).__name__}" for key, kind in key_types.items()
             if not isinstance(payload[key], kind) or isinstance(payload[key], bool)]
    if wrong or payload["step"] < 0:
        raise SetupError(f"checkpoint {path} is damaged: {', '.join(wrong) or 'negative step'}")
    return payload


def capture_rng() -> dict[str, Any]:
    """The global RNG states as tensors (``weights_only``-loadable).  Only torch's: nothing in a
    run draws from numpy's or Python's global generators (data order and noise use seeded
    ``torch.Generator``s kept in the session)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng``; CUDA states are restored when this process has as many GPUs."""
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("cuda")
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
