"""Starting a trainer, shared by ``denoise.py`` and ``python -m equiformer.atomistic.train``:
its settings (fresh or resumed), the device and processes around its session, and the
exit status."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from .checkpoint import CHECKPOINT_NAME
from .config import ConfigError, Settings, SetupError, resolve_resume
from .distributed import DistContext, init_process_group, shutdown
from .fit import TrainingDiverged
from .interrupt import StopRequest

EXIT_INTERRUPTED = 130
"""128 + SIGINT, the shell's convention for a job ended by Ctrl-C (after saving, here)."""
EXIT_USAGE = 2
EXIT_FAILED = 1
"""The run itself failed (its loss diverged); the last checkpoint is kept."""

SettingsT = TypeVar("SettingsT", bound=Settings)
SessionT = TypeVar("SessionT")


def exit_status(program: str, train: Callable[[], int]) -> int:
    """``train()``'s exit status; setting and data errors and a diverged loss become one line
    on stderr, prefixed with ``program``."""
    try:
        return train()
    except (ConfigError, SetupError) as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingDiverged as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        return EXIT_FAILED


def open_run(
    explicit: dict[str, Any],
    settings: type[SettingsT],
    load: Callable[[Path], dict],
    fresh: Callable[[dict[str, Any]], SettingsT],
) -> tuple[SettingsT, dict | None]:
    """The run's settings and, with ``--resume``, the checkpoint they come from (read by
    ``load``); ``fresh`` makes a new run's settings from the flags.  A new run refuses an
    ``--out`` that holds a checkpoint (unless ``--overwrite``), and every run one that cannot
    become a folder, before the data and model are built."""
    checkpoint = None
    if explicit.get("resume"):
        path = Path(explicit.get("out", settings.out)) / CHECKPOINT_NAME
        checkpoint = load(path)
        config = resolve_resume(checkpoint["config"], explicit, str(path), settings)
    else:
        config = fresh(explicit)
        existing = Path(config.out) / CHECKPOINT_NAME
        if existing.exists() and not config.overwrite:
            raise SetupError(f"{existing} exists: pass --resume to continue that run, --overwrite "
                             "to start again, or another --out")
    check_out_folder(Path(config.out))
    return config, checkpoint


def check_out_folder(out: Path) -> None:
    """Refuse an ``--out`` that cannot become a folder (a file, or under one)."""
    if out.exists() and not out.is_dir():
        raise SetupError(f"--out {out} is a file, not a folder")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise SetupError(f"--out {out} cannot be made: {parent} is a file, not a folder")


def pick_device(name: str, ctx: DistContext) -> torch.device:
    """``auto``: CUDA if available. Under torchrun each process takes the GPU of its local rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SetupError(f"--device {name}: CUDA is not available on this machine")
        if ctx.enabled or name == "cuda":
            return torch.device("cuda", ctx.local_rank)
    return torch.device(name)


def run_session(
    config: Settings,
    ctx: DistContext,
    device: torch.device,
    build: Callable[[], SessionT],
    fit: Callable[[SessionT, StopRequest], str],
    report: Callable[[SessionT, str], int],
) -> int:
    """Join the processes on ``device``, ``build`` the session, ``fit`` it with Ctrl-C and
    SIGTERM turned into stop requests, and return ``report``'s exit status; the process
    group and torch's thread count are restored however it ends."""
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    init_process_group(ctx, device)
    try:
        session = build()
        with StopRequest() as stop:
            status = fit(session, stop)
        return report(session, status)
    finally:
        shutdown(ctx)
        torch.set_num_threads(threads)
