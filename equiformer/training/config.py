"""Every setting of a denoising run in one frozen dataclass, its presets, and the command line.

The dataclass is the single source of truth: ``--help``, the presets, the checkpoint's stored
config and the resume check are all derived from its fields, so a new setting is one field (plus
its bounds in ``_validate`` when it has any).
Each field has a *role* that says what ``--resume`` may do with it:

* ``strict``: shapes the training trajectory or the validation numbers (model, data,
  optimiser, seed ...). Taken from the checkpoint; giving a different value is an error.
* ``inherit``: bookkeeping that may change between invocations (how often to validate,
  checkpoint, log). Taken from the checkpoint unless given again.
* ``run``: about this invocation only (device, output folder, ``--resume`` itself ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

ROLES = ("strict", "inherit", "run")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
DTYPES = ("float32", "float64")
ATTENTION = ("mlp", "l2")
MAX_THREADS = 1024
"""Upper bound of --threads: above any one machine's core count (and torch crashes on huge values)."""


class ConfigError(ValueError):
    """A setting, or a combination of settings, that cannot run; the message says which."""


class SetupError(RuntimeError):
    """The run cannot start (missing data, unreadable checkpoint ...); the message names it."""


def setting(help: str, role: str = "strict", group: str = "training", **argparse_kwargs: Any) -> dict:
    """Field metadata: the ``--help`` text, the resume role and extra argparse arguments (they
    override the derived ones, e.g. ``nargs="+", type=int`` for a space-separated tuple)."""
    assert role in ROLES, role
    return {"help": help, "role": role, "group": group, "argparse": argparse_kwargs}


class Settings:
    """Base of a frozen dataclass of run settings whose fields carry ``setting`` metadata: the
    plain-dict form stored in checkpoints and the resume roles. ``TrainConfig`` is one;
    ``equiformer.atomistic.train`` has another, so both share the command line and resume rules."""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of primitives (tuples become lists), as stored in checkpoints."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Any:
        """Inverse of ``to_dict``; unknown keys are an error, missing keys get defaults."""
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown settings {sorted(unknown)}")
        return cls(**{k: _coerce(k, v, cls) for k, v in values.items()})


@dataclass(frozen=True)
class TrainConfig(Settings):
    """Settings of one denoising run; the defaults are the ``small`` preset (2 CPU cores, ~3 min)."""

    # ---------------------------------------------------------------- data
    data: str | None = field(default=None, metadata=setting(
        "folder of PDB/mmCIF files (.pdb .ent .cif .mmcif, optionally .gz), searched recursively, "
        "instead of the embedded set", group="data", metavar="DIR"))
    sidechainnet: str | None = field(default=None, metadata=setting(
        "local SidechainNet pickle (0.7 or 1.0 layout, all splits pooled and re-split by PDB "
        "entry) instead of the embedded set; nothing is downloaded", group="data", metavar="PATH"))
    strict_data: bool = field(default=False, metadata=setting(
        "stop at the first unreadable structure file instead of skipping it with a warning",
        role="run", group="data"))
    min_residues: int = field(default=16, metadata=setting(
        "leave out chains with fewer resolved residues", group="data"))
    val_fraction: float = field(default=0.1, metadata=setting(
        "fraction of PDB entries held out for validation", group="data"))
    split_seed: int = field(default=0, metadata=setting(
        "seed of the train/validation split by PDB entry (independent of --seed)", group="data"))
    val_proteins: int = field(default=16, metadata=setting(
        "validate on at most this many held-out chains (a fixed, seeded choice)", group="data"))
    crop: int = field(default=32, metadata=setting(
        "crop every chain to a random window of this many residues (4 atoms each)", group="data"))

    # ---------------------------------------------------------------- task
    noise: float = field(default=1.0, metadata=setting(
        "standard deviation (Å) of the Gaussian noise added to each backbone coordinate",
        group="task"))

    # ---------------------------------------------------------------- model
    preset: str = field(default="small", metadata=setting(
        "named set of model and training sizes; flags given explicitly override it",
        group="model", choices=("small", "large")))
    dim: tuple[int, ...] = field(default=(32, 16), metadata=setting(
        "channels per degree, comma separated", group="model"))
    num_degrees: int = field(default=2, metadata=setting("degrees 0..L-1 of the hidden features",
                                                      group="model"))
    heads: tuple[int, ...] = field(default=(4, 4), metadata=setting(
        "attention heads per degree, comma separated", group="model"))
    dim_head: tuple[int, ...] = field(default=(16, 8), metadata=setting(
        "channels per attention head and degree, comma separated", group="model"))
    depth: int = field(default=2, metadata=setting("attention blocks", group="model"))
    num_neighbors: int = field(default=16, metadata=setting(
        "nearest atoms each atom attends to, besides its covalent neighbours", group="model"))
    valid_radius: float = field(default=10.0, metadata=setting(
        "neighbour search radius (Å)", group="model"))
    adj_degrees: int = field(default=3, metadata=setting(
        "embed covalent hop distance 1..K on edges and attend to atoms within K bonds",
        group="model"))
    attention: str = field(default="mlp", metadata=setting(
        "attention kind: 'mlp' (Equiformer paper) or 'l2' (distance of queries and keys)",
        group="model", choices=ATTENTION))

    # ---------------------------------------------------------------- optimisation
    steps: int = field(default=1200, metadata=setting("optimizer steps in total"))
    batch_size: int = field(default=4, metadata=setting(
        "chains per micro-batch on each process (global batch = this x processes x --accumulate)"))
    accumulate: int = field(default=1, metadata=setting(
        "micro-batches whose gradients are summed before each optimizer step"))
    lr: float = field(default=3e-3, metadata=setting("peak learning rate of AdamW"))
    min_lr_ratio: float = field(default=0.05, metadata=setting(
        "the cosine decay ends at this fraction of --lr"))
    warmup_steps: int = field(default=50, metadata=setting("steps of linear warm-up to --lr"))
    weight_decay: float = field(default=0.01, metadata=setting(
        "AdamW weight decay (not applied to biases, norms and other vectors)"))
    clip_grad: float = field(default=1.0, metadata=setting(
        "clip the global gradient norm to this value (0: no clipping)"))
    seed: int = field(default=0, metadata=setting(
        "seed of the initial weights, the data order, crops and training/validation noise"))
    dtype: str = field(default="float32", metadata=setting(
        "parameter and coordinate dtype; float64 for exact reproducibility checks",
        choices=DTYPES))

    # ---------------------------------------------------------------- bookkeeping
    val_every: int = field(default=100, metadata=setting(
        "validate every N steps (and always after the last step)", role="inherit",
        group="output"))
    checkpoint_every: int = field(default=100, metadata=setting(
        "write the checkpoint every N steps (also on Ctrl-C and at the end)", role="inherit",
        group="output"))
    log_every: int = field(default=20, metadata=setting(
        "append the mean training loss to metrics.jsonl every N steps", role="inherit",
        group="output"))

    # ---------------------------------------------------------------- this invocation
    out: str = field(default=os.path.join("runs", "denoise"), metadata=setting(
        "output folder: checkpoint.pt, metrics.jsonl, curves.png, validation_example.pdb",
        role="run", group="output", metavar="DIR"))
    resume: bool = field(default=False, metadata=setting(
        "continue from --out's checkpoint; settings not given are taken from it",
        role="run", group="output"))
    overwrite: bool = field(default=False, metadata=setting(
        "start afresh even if --out already holds a checkpoint", role="run", group="output"))
    stop_at_step: int = field(default=0, metadata=setting(
        "stop this invocation after step N with a checkpoint, as if interrupted (0: run to "
        "--steps); for time-limited jobs", role="run", group="output"))
    progress: bool = field(default=True, metadata=setting(
        "show a progress bar (process 0 only)", role="run", group="output"))
    device: str = field(default="auto", metadata=setting(
        "'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N'", role="run", group="runtime"))
    precision: str = field(default="auto", metadata=setting(
        "'bf16' autocast (CUDA only), 'fp32', or 'auto' (bf16 on CUDA, fp32 on CPU)",
        role="run", group="runtime", choices=PRECISIONS))
    threads: int = field(default=0, metadata=setting(
        "CPU threads per process (0: torch's default; at most 1024)", role="run", group="runtime"))

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def per_rank_batch(self) -> int:
        """Chains per optimizer step on one process; multiply by the world size for all ranks."""
        return self.batch_size * self.accumulate


PRESETS: dict[str, dict[str, Any]] = {
    # The dataclass defaults. On 2 idle CPU cores (Nov 2026 model code): ~0.13-0.16 s per
    # step, about 3 minutes in all; validation RMSD 1.72 -> ~0.68 Å. Tuned against deeper,
    # wider, degree-3 and batch-8 variants at equal compute, which all ended within 0.01 Å.
    "small": {},
    # For one GPU: 6 blocks of degrees 0-2, 64-residue crops (256 atoms), 16 chains per step.
    "large": dict(
        dim=(128, 64, 32), num_degrees=3, heads=(8, 8, 4), dim_head=(32, 16, 16), depth=6,
        num_neighbors=32, crop=64, batch_size=16, steps=20000, warmup_steps=1000, lr=5e-4,
        val_proteins=64, val_every=500, checkpoint_every=500, log_every=50,
    ),
}


def fields_by_role(role: str, cls: type[Settings] = TrainConfig) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata["role"] == role)


def resolve(explicit: dict[str, Any]) -> TrainConfig:
    """A fresh run's config: dataclass defaults, then the preset, then the explicit flags."""
    preset = explicit.get("preset", TrainConfig.preset)
    return TrainConfig(**{**PRESETS[preset], **explicit})


def explicit_with_preset(explicit: dict[str, Any]) -> dict[str, Any]:
    """The settings a user asked for: an explicit ``--preset`` counts as all of its values."""
    if "preset" not in explicit:
        return dict(explicit)
    return {**PRESETS[explicit["preset"]], **explicit}


def resolve_resume(saved: dict[str, Any], explicit: dict[str, Any], source: str = "the checkpoint",
                   cls: type[Settings] = TrainConfig) -> Any:
    """The config of a resumed run: the checkpoint's, with ``inherit``/``run`` flags applied.
    ``source`` names the checkpoint in errors; ``cls`` is the settings class.

    Raises ``ConfigError`` naming every strict setting that the command line changes.
    """
    try:
        saved_config = cls.from_dict(saved)
    except (ConfigError, TypeError) as error:
        raise ConfigError(f"the config stored in {source} is not one this version reads: {error}")
    asked = explicit_with_preset(explicit)
    conflicts = [
        f"{name}: checkpoint has {getattr(saved_config, name)!r}, this run asks for {value!r}"
        for name, value in asked.items()
        if name in fields_by_role("strict", cls) and _coerce(name, value, cls) != getattr(saved_config, name)
    ]
    if conflicts:
        raise ConfigError(
            "--resume with settings that differ from the checkpoint's (they would change the "
            "training run; drop these flags or start a new run with another --out):\n  "
            + "\n  ".join(conflicts)
        )
    run_defaults = {name: getattr(cls, name) for name in fields_by_role("run", cls)}
    merged = {**saved_config.to_dict(), **run_defaults, **asked}
    return cls.from_dict(merged)


# ---------------------------------------------------------------- command line


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _metavar(default: Any) -> str:
    if isinstance(default, tuple):
        return "N,N,..."
    return {int: "N", float: "X"}.get(type(default), "TEXT")


def _argparse_type(default: Any):
    if isinstance(default, tuple):
        return _int_tuple
    if isinstance(default, (int, float)):
        return type(default)
    return str


def build_parser(prog: str = "denoise.py") -> argparse.ArgumentParser:
    """The ``denoise.py`` command line, generated from ``TrainConfig``'s fields."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train an Equiformer to denoise protein backbones (N, CA, C, O): Gaussian "
        "noise is added to the atoms and the network predicts the displacement back, as its "
        "type-1 (vector) output. Runs on the embedded set of real PDB chains by default. "
        "Multi-process: torchrun --nproc_per_node K denoise.py ...",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
        epilog="Exit status: 0 finished (or stopped by --stop-at-step), 130 interrupted by "
        "Ctrl-C/SIGTERM after saving a checkpoint, 2 bad settings or data.",
    )
    add_settings_arguments(parser, TrainConfig, lambda name: _preset_note(PRESETS["large"].get(name)))
    return parser


def _preset_note(value: Any) -> str:
    return f"; large preset: {_show(value)}" if value is not None else ""


def add_settings_arguments(parser: argparse.ArgumentParser, cls: type[Settings],
                           note: Callable[[str], str] = lambda name: "") -> None:
    """One flag per field of ``cls`` (``--snake-name``), grouped by the fields' ``group``, with
    the default (and ``note(name)``) in its help; booleans get ``--no-`` forms."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        group = groups.get(meta["group"]) or parser.add_argument_group(meta["group"])
        groups[meta["group"]] = group
        flag = "--" + f.name.replace("_", "-")
        shown = _show(f.default, meta["argparse"]) + note(f.name)
        help_text = f"{meta['help']} (default: {shown})".replace("%", "%%")
        if isinstance(f.default, bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            kwargs = {"metavar": _metavar(f.default), "type": _argparse_type(f.default),
                      **meta["argparse"]}
            if "choices" in kwargs:
                del kwargs["metavar"]
            group.add_argument(flag, help=help_text, **kwargs)


def parse_args(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The flags given on the command line (only those), as ``TrainConfig`` field values.

    Data paths are made absolute, so that resuming from another working folder still matches.
    """
    explicit = vars(build_parser().parse_args(argv))
    for name in ("data", "sidechainnet"):
        if explicit.get(name):
            explicit[name] = os.path.abspath(explicit[name])
    return explicit


def _show(value: Any, argparse_kwargs: dict[str, Any] | None = None) -> str:
    """A default as the user would type it: tuples comma separated, or space separated for
    ``nargs`` flags."""
    if not isinstance(value, tuple):
        return str(value)
    return (" " if argparse_kwargs and "nargs" in argparse_kwargs else ",").join(map(str, value))


def _coerce(name: str, value: Any, cls: type[Settings] = TrainConfig) -> Any:
    """Lists from a checkpoint back to tuples, ints to floats where the field is a float."""
    default = next(f.default for f in dataclasses.fields(cls) if f.name == name)
    if isinstance(default, tuple) and isinstance(value, Iterable) and not isinstance(value, str):
        return tuple(value)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _validate(config: TrainConfig) -> None:
    problems = []

    def need(condition: bool, message: str) -> None:
        if not condition:
            problems.append(message)

    need(not (config.data and config.sidechainnet), "give at most one of --data and --sidechainnet")
    for name in ("min_residues", "val_proteins", "crop", "depth", "steps",
                 "batch_size", "accumulate", "val_every", "checkpoint_every", "log_every"):
        need(getattr(config, name) >= 1, f"--{name.replace('_', '-')} must be >= 1")
    for name in ("split_seed", "seed", "warmup_steps", "num_neighbors", "adj_degrees",
                 "stop_at_step", "threads"):
        need(getattr(config, name) >= 0, f"--{name.replace('_', '-')} must be >= 0")
    # A fixed bound, the same on every machine: more threads than any one machine has cores
    # only slows a run down, and torch.set_num_threads segfaults on huge values (100000).
    need(config.threads <= MAX_THREADS,
         f"--threads must be in 0..{MAX_THREADS} (0: torch's default)")
    # the denoiser predicts displacements as the type-1 (vector) output: degrees 0 and 1
    need(config.num_degrees >= 2,
         "--num-degrees must be >= 2: denoising predicts the type-1 (vector) output")
    need(0.0 < config.val_fraction < 1.0, "--val-fraction must be in (0, 1)")
    # `x > 0` is false for NaN but true for inf, which these settings cannot use
    need(0 < config.noise < math.inf, "--noise must be > 0 and finite")
    need(0 < config.lr < math.inf, "--lr must be > 0 and finite")
    need(0.0 <= config.min_lr_ratio <= 1.0, "--min-lr-ratio must be in [0, 1]")
    need(0 <= config.weight_decay < math.inf, "--weight-decay must be >= 0 and finite")
    need(config.clip_grad >= 0, "--clip-grad must be >= 0 (0 or inf: no clipping)")
    need(config.valid_radius > 0, "--valid-radius must be > 0 (inf: no cutoff)")
    need(config.num_neighbors > 0 or config.adj_degrees > 0,
         "with --num-neighbors 0 the atoms need --adj-degrees >= 1 to attend to anything")
    for name in ("dim", "heads", "dim_head"):
        value = getattr(config, name)
        need(len(value) in (1, config.num_degrees) and min(value) >= 1,
             f"--{name.replace('_', '-')} needs 1 or --num-degrees ({config.num_degrees}) "
             f"positive values, got {_show(value)}")
    need(config.preset in PRESETS, f"--preset must be one of {sorted(PRESETS)}")
    need(config.attention in ATTENTION, f"--attention must be one of {ATTENTION}")
    need(config.dtype in DTYPES, f"--dtype must be one of {DTYPES}")
    need(config.precision in PRECISIONS, f"--precision must be one of {PRECISIONS}")
    need(config.device in DEVICES or re.fullmatch(r"cuda:\d+", config.device) is not None,
         f"--device must be one of {DEVICES} or cuda:N (N a GPU index), got {config.device!r}")
    # torch.manual_seed takes 64-bit seeds (larger ones overflowed with a traceback)
    need(config.seed < 2**64, f"--seed must be < 2**64, got {config.seed}")
    need(not (config.device == "cpu" and config.precision == "bf16"),
         "--precision bf16 is for CUDA only (CPU autocast would be slower, not faster)")
    need(not (config.dtype == "float64" and config.precision == "bf16"),
         "--precision bf16 needs --dtype float32")
    need(not (config.resume and config.overwrite), "give at most one of --resume and --overwrite")
    if problems:
        raise ConfigError("; ".join(problems))
