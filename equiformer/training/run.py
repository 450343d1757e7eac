"""Set up a denoising run (config, device, data, model, resume), run the loop, report.

``main`` is what ``denoise.py`` calls; ``train`` does the same from a dict of settings, for
use from Python and tests.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .allocator import keep_freed_memory
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, restore_rng, save_checkpoint
from .config import ConfigError, SetupError, TrainConfig, parse_args, resolve
from .data import BatchOrder, fingerprint, load_backbones, make_batch, split
from .distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    context_from_env,
    gather_digests,
    wrap_model,
)
from .files import atomic_path, remove_stale_temporaries
from .fit import TrainWindow
from .launch import EXIT_INTERRUPTED, exit_status, open_run, pick_device, run_session
from .loop import Session, fit
from .metrics import CURVES_NAME, MetricsLog
from .objective import bf16_problem, build_model
from .optim import build_optimizer, build_scheduler
from .validation import EXAMPLE_NAME, build_validation_set


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and train; setting and data errors become one clear line."""
    explicit = parse_args(argv)
    keep_freed_memory()  # the script owns its process: faster CPU steps (see allocator)
    return exit_status("denoise.py", lambda: train(explicit))


def train(explicit: dict[str, Any]) -> int:
    """Train with the given settings (``TrainConfig`` field names); returns the exit status."""
    ctx = context_from_env()
    config, checkpoint = open_run(explicit, TrainConfig, load_checkpoint, resolve)
    device = pick_device(config.device, ctx)
    precision = pick_precision(config.precision, device)
    return run_session(config, ctx, device,
                       lambda: build_session(config, ctx, device, precision, checkpoint),
                       fit, report)


def pick_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision == "bf16" and device.type != "cuda":
        raise ConfigError("--precision bf16 is for CUDA only, and this run is on the CPU")
    return precision


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), the only global generator a run draws from (initial weights,
    neighbour caps); data order and noise have their own seeded generators.

    Nothing else is needed for bitwise-repeatable CPU runs: the CPU kernels this model uses are
    deterministic for a fixed thread count, as tests/training/test_resume.py checks
    (``torch.use_deterministic_algorithms`` is about CUDA kernels, and importing it costs
    seconds). CUDA runs are repeatable only up to rounding.
    """
    torch.manual_seed(seed)


def build_session(
    config: TrainConfig,
    ctx: DistContext,
    device: torch.device,
    precision: str,
    checkpoint: dict | None,
) -> Session:
    """Data, model, optimizer and output folder, restored from ``checkpoint`` when resuming."""
    dtype = getattr(torch, config.dtype)
    backbones = load_backbones(config)
    train_chains, val_chains = split(backbones, config)
    seed_everything(config.seed)
    module = build_model(config).to(device=device, dtype=dtype)
    optimizer = build_optimizer(module, config)
    scheduler = build_scheduler(optimizer, config)
    order = BatchOrder(len(train_chains), config.seed)
    if config.precision == "auto" and precision == "bf16":
        probe = make_batch(train_chains[:1], [0], config.crop, config.noise, dtype).to(device)
        problem = bf16_problem(module, probe)
        if problem is not None:
            precision = "fp32"
            if ctx.is_main:
                print(f"warning: the model does not run under bf16 autocast ({problem}); "
                      "training in fp32", file=sys.stderr)
    out = Path(config.out)
    step, elapsed = 0, 0.0
    window, validation_due = TrainWindow(), False
    data_fingerprint, val_fingerprint = fingerprint(train_chains), fingerprint(val_chains)
    if checkpoint is not None:
        _check_compatible(checkpoint, ctx, data_fingerprint, val_fingerprint, out)
        window, validation_due = restore_states(checkpoint, module, optimizer, scheduler, order,
                                                out / CHECKPOINT_NAME)
        step, elapsed = int(checkpoint["step"]), float(checkpoint["elapsed"])
    session = Session(
        config=config, ctx=ctx, device=device, precision=precision, dtype=dtype,
        model=wrap_model(module, ctx, device), module=module, optimizer=optimizer,
        scheduler=scheduler, order=order, train_chains=train_chains,
        val_chunks=build_validation_set(val_chains, config, dtype), out=out,
        metrics=MetricsLog(out, enabled=False),  # the real one below, after --overwrite's save
        data_fingerprint=data_fingerprint, val_fingerprint=val_fingerprint, step=step, elapsed=elapsed, window=window,
        validation_due=validation_due,
    )
    prepare_out_folder(session, resume_step=step if checkpoint else None)
    if checkpoint is not None and "validation_due" not in checkpoint:
        # older checkpoints: a run whose steps are all done owes its final validation
        # unless metrics.jsonl has it (an interrupt in the last step used to skip it);
        # read on rank 0 only and shared, so that all ranks agree on whether to validate
        missing = step == config.steps and not any(
            r.get("step") == step for r in session.metrics.of_kind("val"))
        flag = torch.tensor(float(missing and ctx.is_main), device=device)
        session.validation_due = all_reduce_sum(flag, ctx).item() > 0
    source = config.data or config.sidechainnet or "the embedded set"
    parameters = sum(p.numel() for p in module.parameters())
    session.say(
        f"data: {len(train_chains)} training / {len(val_chains)} validation chains from {source}"
        f"; model: {parameters:,} parameters; {device} {precision} {config.dtype}, "
        f"{torch.get_num_threads()} threads x {ctx.world_size} processes; global batch "
        f"{config.per_rank_batch * ctx.world_size} chains of <= {config.crop} residues; "
        f"steps {config.steps}; output {out}"
    )
    if checkpoint is not None:
        session.say(f"resumed from step {step} of {config.steps} ({out / CHECKPOINT_NAME})")
    return session


def prepare_out_folder(
    session: Session,
    resume_step: int | None,
    outputs: tuple[str, ...] = (CURVES_NAME, EXAMPLE_NAME),
    plotter: Callable[[list[dict[str, Any]], Path], None] | None = None,
) -> None:
    """Rank 0 makes the output folder (clearing stale temporaries, replacing the old run under
    ``--overwrite``: its checkpoint by this run's step 0 and its ``outputs`` deleted), opens
    ``metrics.jsonl`` (plotted by ``plotter``, see ``MetricsLog``) and writes ``config.json``;
    every rank opens its (silent) metrics log.  ``session`` is this module's ``Session`` or
    any object with its ``config``, ``ctx``, ``out``, ``device``, ``metrics`` and
    ``checkpoint_state()`` (the atomistic trainer's).
    All ranks then agree on whether that worked: an error only rank 0 meets (a damaged metrics
    file, a folder it cannot write) must stop every rank here, not leave the others to fail or
    hang in the first gradient all-reduce."""
    config, ctx, out = session.config, session.ctx, session.out
    error: Exception | None = None
    if ctx.is_main:
        try:
            out.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(out)
            if config.overwrite:
                _replace_previous_run(session, outputs)
            session.metrics = MetricsLog(out, True, resume_step=resume_step, plotter=plotter)
            with atomic_path(out / "config.json") as temporary:
                temporary.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        except (SetupError, OSError) as caught:
            error = caught
    else:
        session.metrics = MetricsLog(out, False, resume_step=resume_step, plotter=plotter)
    failed = all_reduce_sum(torch.tensor(float(error is not None), device=session.device), ctx)
    if isinstance(error, SetupError):
        raise error
    if error is not None:
        raise SetupError(f"--out {out}: cannot write the run's files there ({error})") from error
    if failed.item() > 0:
        raise SetupError(f"rank 0 could not set up --out {out}; its error says why")


def _replace_previous_run(session: Session, outputs: tuple[str, ...]) -> None:
    """``--overwrite``: before the new run writes anything else, atomically replace the old
    run's checkpoint with the new run's step-0 one, and delete the old ``outputs`` (the plot
    and example).

    Killed before its own first periodic checkpoint, the new run must not leave the old
    checkpoint next to its config.json, for ``--resume`` to continue the old run silently;
    with this one, ``--resume`` starts the new run from step 0 (bitwise as a fresh start:
    nothing draws from the RNGs between here and the first step).
    """
    save_checkpoint(session.out / CHECKPOINT_NAME, session.checkpoint_state())
    for name in outputs:
        (session.out / name).unlink(missing_ok=True)


def restore_states(
    checkpoint: dict, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler, order: BatchOrder, path: Path,
) -> tuple[TrainWindow, bool]:
    """Load the checkpoint's model, optimizer, scheduler, data-order and RNG states; one that
    does not fit this run is a SetupError naming it.  Returns the training-loss window and
    whether a validation is due."""
    parts = (("model weights", lambda: module.load_state_dict(checkpoint["model"])),
             ("optimizer state", lambda: optimizer.load_state_dict(checkpoint["optimizer"])),
             ("scheduler state", lambda: scheduler.load_state_dict(checkpoint["scheduler"])),
             ("data order", lambda: order.load_state_dict(checkpoint["order"])),
             ("RNG state", lambda: restore_rng(checkpoint["rng"])))
    for what, load in parts:
        try:
            load()
        except SetupError as error:
            raise SetupError(f"cannot resume from {path}: {error}") from error
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as error:
            detail = str(error).strip().replace("\n", " ")[:400]
            raise SetupError(f"cannot resume from {path}: its {what} cannot be loaded into "
                             f"this run ({type(error).__name__}: {detail})") from error
    try:  # optional keys (added within format 1): missing means an empty window, nothing due
        state = checkpoint.get("train_window")
        window = TrainWindow.from_state(state) if state else TrainWindow()
        validation_due = checkpoint.get("validation_due", False)
        if window.steps < 0 or not isinstance(validation_due, bool):
            raise ValueError("negative step count or non-boolean validation_due")
    except (KeyError, ValueError, TypeError) as error:
        raise SetupError(f"cannot resume from {path}: its training-loss window is damaged "
                         f"({type(error).__name__}: {error})") from error
    return window, validation_due


def _check_compatible(
    checkpoint: dict, ctx: DistContext, data_fingerprint: str, val_fingerprint: str, out: Path
) -> None:
    if checkpoint["world_size"] != ctx.world_size:
        raise ConfigError(
            f"{out / CHECKPOINT_NAME} was written by {checkpoint['world_size']} processes and this "
            f"run has {ctx.world_size}: resume with the same number, so that each step sees the "
            "same global batch"
        )
    if checkpoint["data_fingerprint"] != data_fingerprint:
        raise SetupError(
            "the training chains differ from those of the checkpoint (files added, removed or "
            "unreadable in the data folder?): resuming would not continue the same run"
        )
    # older checkpoints have no validation fingerprint: nothing to compare
    if checkpoint.get("val_fingerprint", val_fingerprint) != val_fingerprint:
        raise SetupError(
            "the validation chains differ from those of the checkpoint (files added, removed or "
            "unreadable in the data folder?): the resumed run's validation would not be comparable"
        )


def report(session: Session, status: str) -> int:
    """Final record with every rank's parameter digest, the plot, and a closing line."""
    config = session.config
    digests = gather_digests(session.module, session.ctx)
    if session.ctx.is_main:
        session.metrics.write(kind="end", step=session.step, status=status,
                              param_digests=digests, elapsed_s=session.elapsed)
        session.metrics.plot(session.out / CURVES_NAME)
    # leave together: a rank tearing its gloo group down while rank 0 still writes the plot
    # aborted now and then ("terminate called without an active exception", SIGABRT)
    barrier(session.ctx)
    if status == "interrupted":
        session.say(f"interrupted at step {session.step} of {config.steps}; checkpoint saved. "
                    f"Continue with: denoise.py --out {config.out} --resume")
        return EXIT_INTERRUPTED
    if status == "stopped":
        session.say(f"stopped at step {session.step} of {config.steps} (--stop-at-step); "
                    f"continue with --resume")
        return 0
    validations = session.metrics.of_kind("val")
    if validations:
        last = validations[-1]
        session.say(f"done: {session.step} steps; last validation (step {last['step']}): "
                    f"backbone RMSD noisy {last['rmsd_noisy']:.3f} Å, denoised "
                    f"{last['rmsd_denoised']:.3f} Å; outputs in {session.out}")
    return 0
