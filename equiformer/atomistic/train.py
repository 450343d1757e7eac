"""Train a ``Potential`` on energies, forces (and stresses) from extended XYZ files.

    python -m equiformer.atomistic.train --data train.extxyz [--valid valid.extxyz] --out DIR
    python -m equiformer.atomistic.train --out DIR --resume          # after a kill or --max-time
    torchrun --nproc_per_node K -m equiformer.atomistic.train ...    # global batch K x --batch-size

Before step 0 the potential's per-element reference energies are fitted to the training
energies by least squares and its scale to the RMS of the training forces.  Training is AdamW
with a linear warm-up and a cosine decay over ``--steps`` and an exponential moving average
(EMA) of the weights, which is what validation evaluates and ``potential.pt`` holds.

DIR receives ``checkpoint.pt`` (raw and EMA weights, optimizer, data order and RNG state:
``--resume`` continues bit for bit on the CPU), ``potential.pt`` (``Potential.load`` or
``EquiformerCalculator(path)``), ``metrics.jsonl``, ``curves.png``, ``parity.png`` and
``config.json``.  The settings, the checkpoint, the metrics and the multi-process plumbing are
``equiformer.training``'s, shared with ``denoise.py``.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..training.checkpoint import (
    CHECKPOINT_NAME,
    KEY_TYPES,
    REQUIRED_KEYS,
    load_checkpoint,
)
from ..training.config import (
    DEVICES,
    DTYPES,
    MAX_THREADS,
    ConfigError,
    Settings,
    SetupError,
    add_settings_arguments,
    setting,
)
from ..training.data import BatchOrder
from ..training.distributed import (
    DistContext,
    barrier,
    context_from_env,
    gather_digests,
)
from ..training.extras import missing_extras, missing_extras_message
from ..training.launch import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    exit_status,
    open_run,
    pick_device,
    run_session,
)
from ..training.metrics import CURVES_NAME, MetricsLog
from ..training.optim import build_optimizer, build_scheduler
from ..training.run import prepare_out_folder, restore_states, seed_everything
from .plots import plot_curves
from .potential import Potential
from .structures import (
    DataError,
    Structures,
    check_elements,
    read_structures,
    split_frames,
)
from .training_loop import (
    PARITY_NAME,
    POTENTIAL_NAME,
    PROGRAM,
    ExponentialMovingAverage,
    Session,
    fit,
    validation_chunks,
)

EXTRAS = ("ase", "vesin", "matplotlib")
INSTALL_HINT = 'pip install "equiformer[atomistic]" matplotlib'
ATTENTION = ("mlp", "l2")
CHECKPOINT_KEYS = (*REQUIRED_KEYS, "program", "ema", "valid_fingerprint", "elements")
CHECKPOINT_TYPES = {**KEY_TYPES, "ema": dict}


def _per_degree(help: str) -> dict:
    """A tuple setting typed as space-separated integers (``--dim 32 16 8``)."""
    return setting(help, group="model", nargs="+", type=int, metavar="N")


@dataclass(frozen=True)
class PotentialTrainConfig(Settings):
    """Settings of one potential training run (roles as ``equiformer.training.config``'s)."""

    # ---------------------------------------------------------------- data
    data: str | None = field(default=None, metadata=setting(
        "training frames: extended XYZ whose frames carry energy and forces (stress optional); "
        "required for a new run", group="data", metavar="FILE"))
    valid: str | None = field(default=None, metadata=setting(
        "validation frames (default: hold out --valid-fraction of --data's frames)",
        group="data", metavar="FILE"))
    valid_fraction: float = field(default=0.1, metadata=setting(
        "fraction of --data's frames held out for validation when --valid is not given",
        group="data"))
    split_seed: int = field(default=0, metadata=setting(
        "seed of that random split by frame (independent of --seed)", group="data"))

    # ---------------------------------------------------------------- model
    cutoff: float = field(default=5.0, metadata=setting("interaction radius (Å)", group="model"))
    dim: tuple[int, ...] = field(default=(32, 16, 8), metadata=_per_degree(
        "channels per degree, one value for all degrees or one per degree"))
    num_degrees: int = field(default=3, metadata=setting(
        "degrees 0..N-1 of the equivariant features", group="model"))
    heads: tuple[int, ...] = field(default=(4,), metadata=_per_degree(
        "attention heads, one value or one per degree"))
    dim_head: tuple[int, ...] = field(default=(8,), metadata=_per_degree(
        "channels per attention head, one value or one per degree"))
    depth: int = field(default=2, metadata=setting("attention blocks", group="model"))
    mmax: int = field(default=-1, metadata=setting(
        "keep orders |m| <= N in the edge frames (eSCN / EquiformerV2 m-truncation: faster at "
        "high --num-degrees, exactly equivariant; -1: every order)", group="model"))
    attention: str = field(default="mlp", metadata=setting(
        "attention kind: 'mlp' (Equiformer paper) or 'l2' (distance of queries and keys)",
        group="model", choices=ATTENTION))

    # ---------------------------------------------------------------- loss
    energy_weight: float = field(default=1.0, metadata=setting(
        "weight of the energy-per-atom MSE (eV^2/atom^2); MACE's default", group="loss"))
    forces_weight: float = field(default=100.0, metadata=setting(
        "weight of the force-component MSE (eV^2/Å^2); MACE's default", group="loss"))
    stress_weight: float = field(default=1.0, metadata=setting(
        "weight of the stress-component MSE (eV^2/Å^6) of stress-labelled periodic frames; "
        "MACE's default (stresses are ~0.01 eV/Å^3: raise it to fit them)", group="loss"))

    # ---------------------------------------------------------------- optimisation
    steps: int = field(default=2000, metadata=setting(
        "optimizer steps in total; the cosine decay ends here (--max-time may stop earlier)"))
    batch_size: int = field(default=4, metadata=setting(
        "structures per step on each process (global batch = this x processes)"))
    lr: float = field(default=5e-3, metadata=setting("peak learning rate of AdamW"))
    min_lr_ratio: float = field(default=0.01, metadata=setting(
        "the cosine decay ends at this fraction of --lr"))
    warmup_steps: int = field(default=50, metadata=setting("steps of linear warm-up to --lr"))
    weight_decay: float = field(default=0.0, metadata=setting(
        "AdamW weight decay of weight matrices (biases, norms and other vectors: none)"))
    clip_grad: float = field(default=10.0, metadata=setting(
        "clip the global gradient norm to this value (0: no clipping)"))
    ema_decay: float = field(default=0.99, metadata=setting(
        "decay of the weights' moving average (validated and exported); warms up as "
        "min(decay, (1+t)/(10+t)) after step t"))
    seed: int = field(default=0, metadata=setting("seed of the initial weights and the data order"))
    dtype: str = field(default="float32", metadata=setting(
        "parameter and coordinate dtype", choices=DTYPES))

    # ---------------------------------------------------------------- bookkeeping
    valid_every: int = field(default=100, metadata=setting(
        "validate (and export potential.pt) every N steps, and at the end", role="inherit",
        group="output"))
    valid_batch_size: int = field(default=16, metadata=setting(
        "structures per validation forward pass", role="inherit", group="output"))
    save_every: int = field(default=100, metadata=setting(
        "write checkpoint.pt every N steps (also at the end and on Ctrl-C)", role="inherit",
        group="output"))
    log_every: int = field(default=10, metadata=setting(
        "append the mean training loss to metrics.jsonl every N steps", role="inherit",
        group="output"))

    # ---------------------------------------------------------------- this invocation
    out: str = field(default=os.path.join("runs", "potential"), metadata=setting(
        "output folder", role="run", group="output", metavar="DIR"))
    resume: bool = field(default=False, metadata=setting(
        "continue from --out's checkpoint; settings not given are taken from it",
        role="run", group="output"))
    overwrite: bool = field(default=False, metadata=setting(
        "start afresh even if --out already holds a checkpoint", role="run", group="output"))
    max_time: float = field(default=0.0, metadata=setting(
        "stop this invocation after N minutes of training (counted from its first step), then "
        "validate and save; --resume continues to --steps (0: no limit)", role="run",
        group="runtime"))
    device: str = field(default="auto", metadata=setting(
        "'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N'", role="run", group="runtime"))
    threads: int = field(default=0, metadata=setting(
        f"CPU threads per process (0: torch's default; at most {MAX_THREADS})", role="run",
        group="runtime"))

    def __post_init__(self) -> None:
        _validate(self)

    def model_keywords(self) -> dict[str, Any]:
        """``Potential``'s Equiformer keywords (a one-value tuple means the same for all degrees)."""
        def per_degree(values: tuple[int, ...]) -> int | tuple[int, ...]:
            return values[0] if len(values) == 1 else values

        return {"dim": per_degree(self.dim), "num_degrees": self.num_degrees,
                "heads": per_degree(self.heads), "dim_head": per_degree(self.dim_head),
                "depth": self.depth, "l2_dist_attention": self.attention == "l2",
                "mmax": None if self.mmax < 0 else self.mmax}


def _validate(config: PotentialTrainConfig) -> None:
    problems = []

    def need(condition: bool, message: str) -> None:
        if not condition:
            problems.append(message)

    for name in ("num_degrees", "depth", "steps", "batch_size", "valid_every", "valid_batch_size",
                 "save_every", "log_every"):
        need(getattr(config, name) >= 1, f"--{name.replace('_', '-')} must be >= 1")
    for name in ("split_seed", "seed", "warmup_steps", "threads"):
        need(getattr(config, name) >= 0, f"--{name.replace('_', '-')} must be >= 0")
    need(config.threads <= MAX_THREADS, f"--threads must be in 0..{MAX_THREADS}")
    need(config.mmax >= -1, f"--mmax must be >= 0, or -1 for every order, got {config.mmax}")
    need(config.seed < 2**64 and config.split_seed < 2**64, "seeds must be < 2**64")
    for name in ("dim", "heads", "dim_head"):
        value = getattr(config, name)
        need(len(value) in (1, config.num_degrees) and min(value, default=0) >= 1,
             f"--{name.replace('_', '-')} needs 1 or --num-degrees ({config.num_degrees}) "
             f"positive values, got {' '.join(map(str, value))}")
    # `x > 0` is false for NaN but true for inf, which none of these can use
    need(0 < config.cutoff < math.inf, "--cutoff must be > 0 and finite")
    need(0 < config.lr < math.inf, "--lr must be > 0 and finite")
    need(0.0 < config.valid_fraction < 1.0, "--valid-fraction must be in (0, 1)")
    need(0.0 <= config.min_lr_ratio <= 1.0, "--min-lr-ratio must be in [0, 1]")
    need(0.0 <= config.ema_decay < 1.0, "--ema-decay must be in [0, 1)")
    need(0 <= config.weight_decay < math.inf, "--weight-decay must be >= 0 and finite")
    need(config.clip_grad >= 0, "--clip-grad must be >= 0 (0 or inf: no clipping)")
    need(0 <= config.max_time < math.inf, "--max-time must be >= 0 and finite (0: no limit)")
    weights = (config.energy_weight, config.forces_weight, config.stress_weight)
    need(all(0 <= w < math.inf for w in weights) and config.energy_weight + config.forces_weight > 0,
         "the loss weights must be >= 0 and finite, --energy-weight or --forces-weight > 0")
    need(config.attention in ATTENTION, f"--attention must be one of {ATTENTION}")
    need(config.dtype in DTYPES, f"--dtype must be one of {DTYPES}")
    need(config.device in DEVICES or re.fullmatch(r"cuda:\d+", config.device) is not None,
         f"--device must be one of {DEVICES} or cuda:N, got {config.device!r}")
    need(not (config.resume and config.overwrite), "give at most one of --resume and --overwrite")
    if problems:
        raise ConfigError("; ".join(problems))


# ---------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {PROGRAM}",
        description="Train an Equiformer interatomic potential on energies, forces (and stresses) "
        "from extended XYZ files; outputs checkpoint.pt, potential.pt (for EquiformerCalculator), "
        "metrics.jsonl, curves.png, parity.png and config.json in --out. Multi-process: "
        f"torchrun --nproc_per_node K -m {PROGRAM} ... (each process takes --batch-size "
        "structures of every step).",
        argument_default=argparse.SUPPRESS,
        epilog="Exit status: 0 finished or stopped by --max-time, 130 interrupted by Ctrl-C/SIGTERM "
        "after saving a checkpoint, 1 the loss diverged, 2 bad settings or data.",
    )
    add_settings_arguments(parser, PotentialTrainConfig)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The flags given (only those) as field values; data paths absolute, so that resuming from
    another working folder still matches."""
    explicit = vars(build_parser().parse_args(argv))
    for name in ("data", "valid"):
        if explicit.get(name):
            explicit[name] = os.path.abspath(explicit[name])
    return explicit


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and train; setting and data errors become one line on stderr."""
    missing = missing_extras(EXTRAS)
    if missing:
        print(missing_extras_message(missing, PROGRAM, INSTALL_HINT), file=sys.stderr)
        return EXIT_FAILED
    explicit = parse_args(argv)
    return exit_status(PROGRAM, lambda: train(explicit))


def train(explicit: dict[str, Any]) -> int:
    """Train with the given settings (``PotentialTrainConfig`` field names); returns the exit status."""
    ctx = context_from_env()
    config, checkpoint = open_run(explicit, PotentialTrainConfig, load_run_checkpoint, fresh_config)
    device = pick_device(config.device, ctx)
    return run_session(config, ctx, device, lambda: build_session(config, ctx, device, checkpoint),
                       fit, report)


def load_run_checkpoint(path: Path) -> dict[str, Any]:
    """This trainer's checkpoint at ``path`` (one of another program is refused)."""
    return load_checkpoint(path, PROGRAM, CHECKPOINT_KEYS, CHECKPOINT_TYPES)


def fresh_config(explicit: dict[str, Any]) -> PotentialTrainConfig:
    """A new run's settings; it needs training data."""
    config = PotentialTrainConfig.from_dict(explicit)
    if not config.data:
        raise ConfigError("--data FILE is required: the training frames (extended XYZ)")
    return config


def load_data(config: PotentialTrainConfig) -> tuple[Structures, Structures]:
    """Training and validation structures; the validation elements must all be trained on."""
    frames = read_structures(config.data)
    if config.valid:
        train_set, valid_set = frames, read_structures(config.valid)
    else:
        train_set, valid_set = split_frames(frames, config.valid_fraction, config.split_seed)
    check_elements(valid_set, train_set.elements, config.data)
    if (train_set.stress is None) != (valid_set.stress is None):
        labelled, other = (train_set, valid_set) if train_set.stress is not None else (valid_set, train_set)
        raise DataError(f"{other.source}: frame {int(other.frames[0])}: no stress label, while "
                        f"{labelled.source} has stresses (label both files' stresses, or neither)")
    return train_set, valid_set


def build_session(config: PotentialTrainConfig, ctx: DistContext, device: torch.device,
                  checkpoint: dict | None) -> Session:
    """Data, fitted model, EMA, optimizer and output folder, restored when resuming."""
    dtype = getattr(torch, config.dtype)
    train_set, valid_set = load_data(config)
    seed_everything(config.seed)
    try:
        model = Potential(train_set.elements, config.cutoff, **config.model_keywords())
    except (TypeError, ValueError) as error:
        raise ConfigError(f"the model settings do not make an Equiformer: {error}") from error
    model.to(device=device, dtype=dtype)
    model.fit_reference(train_set.numbers, train_set.graph_index, train_set.energy)
    model.fit_scale(train_set.forces)
    ema = ExponentialMovingAverage(model, config.ema_decay)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config)
    order = BatchOrder(len(train_set), config.seed)
    out = Path(config.out)
    session = Session(
        config=config, ctx=ctx, device=device, dtype=dtype, model=model, ema=ema,
        optimizer=optimizer, scheduler=scheduler, order=order, train=train_set, valid=valid_set,
        valid_chunks=validation_chunks(valid_set, config.valid_batch_size), out=out,
        metrics=MetricsLog(out, enabled=False),  # the real one below, after --overwrite's save
        data_fingerprint=train_set.fingerprint(), valid_fingerprint=valid_set.fingerprint(),
    )
    if checkpoint is not None:
        _restore(session, checkpoint, out / CHECKPOINT_NAME)
    prepare_out_folder(session, resume_step=session.step if checkpoint else None,
                       outputs=(CURVES_NAME, PARITY_NAME, POTENTIAL_NAME), plotter=plot_curves)
    parameters = sum(p.numel() for p in model.parameters())
    stress = "energy, forces and stress" if train_set.stress is not None else "energy and forces"
    session.say(
        f"data: {len(train_set)} training / {len(valid_set)} validation structures ({stress}), "
        f"elements {list(model.elements)}; model: {parameters:,} parameters, cutoff "
        f"{config.cutoff} Å; {device} {config.dtype}, {torch.get_num_threads()} threads x "
        f"{ctx.world_size} processes; global batch {config.batch_size * ctx.world_size}; steps "
        f"{config.steps}; output {out}"
    )
    if checkpoint is not None:
        session.say(f"resumed from step {session.step} of {config.steps} ({out / CHECKPOINT_NAME})")
    return session


def _restore(session: Session, checkpoint: dict, path: Path) -> None:
    """The checkpoint's states into the session; a checkpoint of other data is a SetupError."""
    if checkpoint["world_size"] != session.ctx.world_size:
        raise ConfigError(f"{path} was written by {checkpoint['world_size']} processes and this run "
                          f"has {session.ctx.world_size}: resume with the same number, so that each "
                          "step sees the same global batch")
    for key, mine, what in (("data_fingerprint", session.data_fingerprint, "training"),
                            ("valid_fingerprint", session.valid_fingerprint, "validation")):
        if checkpoint[key] != mine:
            raise SetupError(f"the {what} frames differ from those {path} was trained with (a "
                             "changed file?): resuming would not continue the same run")
    session.window, session.validation_due = restore_states(
        checkpoint, session.model, session.optimizer, session.scheduler, session.order, path)
    try:
        session.ema.module.load_state_dict(checkpoint["ema"])
    except (RuntimeError, KeyError, TypeError) as error:
        detail = " ".join(str(error).split())[:400]
        raise SetupError(f"cannot resume from {path}: its EMA weights cannot be loaded ({detail})") from error
    session.step, session.elapsed = int(checkpoint["step"]), float(checkpoint["elapsed"])


def report(session: Session, status: str) -> int:
    """The final record with every rank's parameter digest, the plot, and a closing line."""
    config = session.config
    digests = gather_digests(session.model, session.ctx)
    if session.ctx.is_main:
        session.metrics.write(kind="end", step=session.step, status=status, param_digests=digests,
                              elapsed_s=session.elapsed)
        session.metrics.plot(session.out / CURVES_NAME)
    barrier(session.ctx)  # leave together (see equiformer.training.run.report)
    resume = f"python -m {PROGRAM} --out {config.out} --resume"
    if status == "interrupted":
        session.say(f"interrupted at step {session.step} of {config.steps}; checkpoint saved. "
                    f"Continue with: {resume}")
        return EXIT_INTERRUPTED
    if status == "stopped":
        session.say(f"--max-time reached at step {session.step} of {config.steps}; continue with: {resume}")
    last = session.metrics.of_kind("val")
    if last:
        session.say(f"done: step {session.step}; validation (EMA): energy MAE "
                    f"{last[-1]['energy_mae']:.2f} meV/atom, force MAE {last[-1]['forces_mae']:.1f} "
                    f"meV/Å; {session.out / POTENTIAL_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
