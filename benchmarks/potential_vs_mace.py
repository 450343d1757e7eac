"""Our potential against MACE: the same data (EMT crystals or xTB molecules), the same wall-clock budget.

MACE pins e3nn 0.4.4, which conflicts with our test extra's e3nn 0.6, so it lives in its own
virtual environment, made once from the repository root (``/.venv-mace/`` is git-ignored; pip takes
the CPU torch wheel from this machine's disk)::

    python3 -m venv .venv-mace && .venv-mace/bin/pip install torch==2.13.0 mace-torch==0.3.16

Then, with our own environment's python (ase, vesin, matplotlib: ``pip install -e ".[atomistic]"
matplotlib``)::

    python benchmarks/potential_vs_mace.py [--data emt|xtb] [--minutes 10] [--threads 2]
        [--work-dir runs/potential_vs_mace] [--train train.extxyz --valid valid.extxyz]
        [--mace-python .venv-mace/bin/python] [--quick]

What it does, one step after the other (never two trainings at once: each gets ``--threads``):

1. Data: unless ``--train/--valid`` are given, ``python -m equiformer.atomistic.datasets
   emt|xtb`` (``--data``) writes ``--frames`` training and ``--valid-frames`` validation frames
   into the work folder; an existing pair made with the same settings is reused.  ``emt``
   (default): ASE EMT on fcc Cu, Cu-Au alloy, vacancies and a Cu(111) slab, with stresses of the
   periodic frames.  ``xtb``: GFN2-xTB (tblite, in our venv) on H2O, CH4, C2H6, CH3OH and C6H6
   from short MD, non-periodic, energies and forces only (1,000 frames take about 20 s).  With
   ``--train/--valid``, ``--data`` only picks the MD system of step 4.
2. Ours: ``python -m equiformer.atomistic.train --max-time T`` (T = ``--minutes``; the clock
   starts at its first step), same cutoff and batch size as MACE, everything else the trainer's
   defaults (``--ours-args`` adds flags).  It exports the EMA weights it validated last to
   ``potential.pt``.
3. MACE: ``mace.cli.run_train`` with a small model (``--num_channels 32 --max_L 1
   --correlation 3``, 2 interactions, ``--r_max`` = our cutoff, ``--E0s average``, EMA 0.99,
   AMSGrad, float32, loss E + 100 F, MACE's defaults otherwise; ``--mace-args`` adds flags).
   MACE has no wall-clock limit, so it runs inside a small wrapper (this file's ``--worker
   mace-train``) that starts the same T-minute clock at its first epoch and, once T is spent,
   ends the epoch in progress before its next batch: MACE then validates and checkpoints those
   weights as at any epoch's end (``--save_all_checkpoints``: the last epoch, not the best),
   and the wrapper stops it before another epoch begins.  A second, training-free
   ``run_train --restart_latest --max_num_epochs E`` turns that last checkpoint into
   ``mace.model`` (MACE's own way to build and save the model; it must see the same training
   file, from which MACE recomputes the average neighbour count, which is no weight).
4. Both models are evaluated by the same code (``--worker evaluate``, run by each venv's
   python): an ASE loop over the validation frames in float64 giving energy MAE/RMSE per atom,
   force-component MAE/RMSE and the labels' force RMS; then MD speed, ASE velocity Verlet from
   300 K in float32, ``--md-steps`` timed steps after 2 warm-up steps, on a system of the data's
   kind: for ``emt`` a rattled periodic 108-atom fcc Cu cell at 1 fs; for ``xtb`` a non-periodic
   cluster of the validation set's molecules (the first frame of each molecule kind, cycled: 15
   molecules, 102 atoms for the default set) on a cubic grid whose spacing keeps any two
   molecules more than the cutoff + 1 Å apart, so each sees only itself as in training, at 0.5
   fs.  The table's header names the system.
5. One table, with the ratios ours/MACE, and ``results.json`` in the work folder.

Not the same between the two, on purpose or by nature: on EMT data ours also fits the stresses
of the fully periodic frames (weight 1, MACE's default; MACE here trains on energy and forces,
since the slab frames' stress labels mean nothing); the xTB molecules have no cell and no stress
labels, so there neither side has a stress term (our trainer uses a stress label only on a
labelled, fully periodic frame).  Ours decays its learning rate on a cosine over
``--steps`` (the trainer's default 2000: pass ``--ours-args "--steps N"`` to end the decay
within the budget), MACE on a plateau of the validation loss once per epoch.  With 1,000
frames an epoch of MACE is 200 steps, so it validates rarely.

The whole run takes about 2 T plus 10 minutes (data 2 min, set-ups, MACE's restore, two
evaluations); ``--only ours|mace`` runs one side.  ``--quick`` is a smoke run: 20 training and
8 validation frames, 1 minute each, 5 MD steps (about 4 minutes in all).  The work folder
defaults to ``runs/potential_vs_mace``, with ``_quick`` after ``--quick`` and ``_xtb`` after
``--data xtb``.
"""
from __future__ import annotations

# Only the standard library at module level: the MACE venv runs this same file as its worker.
import argparse
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MACE_PYTHON = REPO / ".venv-mace" / "bin" / "python"
RESULT_TAG = "@@RESULT "  # a worker's last line: this tag, then its JSON
MD_ATOMS_REPEAT = 3  # 3^3 conventional fcc cells: 108 atoms
MD_CLUSTER_ATOMS = 100  # molecules are added to the xTB MD system until it has at least this many atoms
MD_WARMUP = 2
DATA_KINDS = ("emt", "xtb")  # the generators of equiformer.atomistic.datasets that --data picks


def _md_system(data: str, valid: str, cutoff: float):
    """The MD-speed system for ``data``: (atoms, description, time step in fs).

    emt: a rattled periodic 108-atom fcc Cu cell, 1 fs.  xtb: a non-periodic cluster of the
    validation set's molecules (the first frame of each ``config_type``, cycled until there are
    ``MD_CLUSTER_ATOMS`` atoms) on a cubic grid whose spacing keeps every two molecules more than
    ``cutoff`` + 1 Å apart, so each molecule sees only itself, as in training; 0.5 fs, as the
    data's MD (hydrogen).
    """
    import ase.io
    import numpy as np
    from ase import Atoms
    from ase.build import bulk

    if data == "emt":
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(MD_ATOMS_REPEAT)
        atoms.rattle(0.02, seed=0)
        return atoms, f"{len(atoms)}-atom fcc Cu cell, periodic, 1 fs", 1.0
    if data != "xtb":
        raise ValueError(f"unknown data kind {data!r}")
    kinds: dict = {}  # name: first frame
    for frame in ase.io.read(valid, ":"):
        kinds.setdefault(str(frame.info.get("config_type", frame.get_chemical_formula())), frame)
    names = list(kinds)
    molecules, count = [], 0
    while count < MD_CLUSTER_ATOMS:
        molecule = kinds[names[len(molecules) % len(names)]]
        molecules.append(molecule)
        count += len(molecule)
    centred = [m.positions - m.positions.mean(0) for m in molecules]
    radius = max(float(np.linalg.norm(c, axis=1).max()) for c in centred)
    spacing = 2 * radius + cutoff + 1.0  # any two atoms of two molecules: > cutoff + 1 Å apart
    side = math.ceil(len(molecules) ** (1 / 3) - 1e-9)
    atoms = Atoms(pbc=False)
    for i, (molecule, positions) in enumerate(zip(molecules, centred)):
        site = spacing * np.array(np.unravel_index(i, (side,) * 3), dtype=float)
        atoms += Atoms(molecule.numbers, positions=positions + site)
    text = (f"{len(atoms)}-atom cluster of {len(molecules)} validation molecules ({', '.join(names)}), "
            f"{spacing:.1f} Å apart, non-periodic, 0.5 fs")
    return atoms, text, 0.5


# ------------------------------------------------------------------------------------ workers


def _worker_evaluate(kind: str, model_path: str, valid: str, threads: int, md_steps: int, data: str,
                     cutoff: float) -> dict:
    """Errors of one model on the validation frames (float64), its size, and its MD speed (float32)
    on ``_md_system(data, valid, cutoff)``."""
    import ase.io
    import numpy as np
    import torch
    from ase import units
    from ase.md.verlet import VelocityVerlet

    try:
        from ase.md.velocitydistribution import thermalize_momenta  # ASE >= 3.29
    except ImportError:
        from ase.md.velocitydistribution import (
            MaxwellBoltzmannDistribution as thermalize_momenta,
        )

    torch.set_num_threads(threads)

    def calculator(dtype: str):
        if kind == "ours":
            from equiformer.atomistic import EquiformerCalculator

            calc = EquiformerCalculator(model_path, device="cpu", dtype=getattr(torch, dtype))
            return calc, list(calc.potential.parameters())
        from mace.calculators import MACECalculator

        calc = MACECalculator(model_paths=model_path, device="cpu", default_dtype=dtype)
        return calc, list(calc.models[0].parameters())

    calc, parameters = calculator("float64")
    e_err, f_err, f_ref = [], [], []
    start = time.perf_counter()
    for frame in ase.io.read(valid, ":"):
        ref_energy, ref_forces = frame.get_potential_energy(), frame.get_forces()
        atoms = frame.copy()  # no calculator, no labels: only species, positions, cell, pbc
        atoms.calc = calc
        e_err.append((atoms.get_potential_energy() - ref_energy) / len(atoms))
        f_err.append((atoms.get_forces() - ref_forces).ravel())
        f_ref.append(ref_forces.ravel())
    eval_s = time.perf_counter() - start
    e_err, f_err, f_ref = np.array(e_err), np.concatenate(f_err), np.concatenate(f_ref)

    md_calc, _ = calculator("float32")
    atoms, md_system, timestep_fs = _md_system(data, valid, cutoff)
    atoms.calc = md_calc
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dynamics = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    dynamics.run(MD_WARMUP)
    start = time.perf_counter()
    dynamics.run(md_steps)
    md_s = time.perf_counter() - start

    milli = 1e3
    return {
        "parameters": int(sum(p.numel() for p in parameters)),
        "frames": int(e_err.size),
        "energy_mae": milli * float(np.abs(e_err).mean()),  # meV/atom
        "energy_rmse": milli * float(np.sqrt((e_err ** 2).mean())),
        "forces_mae": milli * float(np.abs(f_err).mean()),  # meV/Å, per component
        "forces_rmse": milli * float(np.sqrt((f_err ** 2).mean())),
        "forces_rms": milli * float(np.sqrt((f_ref ** 2).mean())),  # the labels': predicting zero
        "eval_s": eval_s,
        "md_atoms": len(atoms),
        "md_system": md_system,
        "md_steps_per_s": md_steps / md_s,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


class _BudgetSpent(Exception):
    """Raised into MACE's epoch loop once the budget is spent and the last epoch is saved."""


def _worker_mace_train(budget_s: float, summary: str, mace_args: list[str]) -> int:
    """Run ``mace.cli.run_train`` with ``mace_args`` under a wall-clock budget.

    ``budget_s`` >= 0: the clock starts when the first epoch does (after MACE's data processing,
    model set-up and initial validation, as ours counts from its first step).  Each epoch's
    batches stop coming once the budget is spent; MACE validates and checkpoints the epoch so cut
    short, and the next epoch's start raises ``_BudgetSpent``.  ``budget_s`` < 0: no training may
    happen (the run that only restores and saves the last checkpoint); an epoch's start is an
    error.  Writes ``summary`` (JSON): steps, epochs started, seconds trained.
    """
    import importlib

    import mace
    from mace.cli.run_train import main as run_train_main

    # the module, not the function ``mace.tools.train`` that mace.tools re-exports under its name
    mace_train = importlib.import_module("mace.tools.train")

    original = mace_train.train_one_epoch
    state = {"start": None, "steps": 0, "epochs": 0, "trained_s": 0.0, "status": "finished"}
    checkpoints = Path(_flag_value(mace_args, "--checkpoints_dir"))

    def until_budget(loader):
        for batch in loader:
            elapsed = time.perf_counter() - state["start"]
            if elapsed >= budget_s:
                state["status"] = "stopped"
                return
            yield batch
            state["steps"] += 1
            state["trained_s"] = time.perf_counter() - state["start"]

    def epoch(*args, **kwargs):
        if budget_s < 0:
            raise RuntimeError("the checkpoint was not restored: this run was not meant to train")
        now = time.perf_counter()
        if state["start"] is None:
            state["start"] = now
        elif state["status"] == "stopped" or now - state["start"] >= budget_s:
            state["status"] = "stopped"
            raise _BudgetSpent
        _prune_checkpoints(checkpoints, keep=2)  # --save_all_checkpoints keeps every epoch's
        state["epochs"] += 1
        if "data_loader" in kwargs:
            kwargs["data_loader"] = until_budget(kwargs["data_loader"])
        else:
            args = (*args[:2], until_budget(args[2]), *args[3:])
        return original(*args, **kwargs)

    mace_train.train_one_epoch = epoch
    sys.argv = ["mace_run_train", *mace_args]
    try:
        run_train_main()
    except _BudgetSpent:
        print(f"budget of {budget_s:.0f} s spent after {state['steps']} steps: stopped", flush=True)
    with open(summary, "w") as handle:
        json.dump({**state, "start": None, "budget_s": budget_s, "mace": mace.__version__}, handle)
    return 0


def _flag_value(args: list[str], flag: str) -> str:
    for i, arg in enumerate(args):
        if arg == flag:
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    raise ValueError(f"{flag} missing from the MACE arguments")


_EPOCH_FILE = re.compile(r"_epoch-(\d+)\.pt$")


def _checkpoint_epochs(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _EPOCH_FILE.search(p.name))]
    return sorted(found)


def _prune_checkpoints(folder: Path, keep: int) -> None:
    for _, path in _checkpoint_epochs(folder)[:-keep]:
        path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------ the comparison


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    # our package, importable however this script was started
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _run(cmd: list[str], log: Path, threads: int, timeout_s: float, cwd: Path | None = None) -> int:
    """Run ``cmd`` with its output to ``log`` (and its last lines echoed); kill it after ``timeout_s``."""
    _say("$ " + shlex.join(str(c) for c in cmd))
    with open(log, "w") as handle:
        process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env=_env(threads), cwd=cwd, start_new_session=True)
        timer = threading.Timer(timeout_s, lambda: _stop(process))
        timer.start()
        try:
            for line in process.stdout:
                handle.write(line)
                handle.flush()
            return process.wait()
        except KeyboardInterrupt:
            _stop(process)
            raise
        finally:
            timer.cancel()


def _stop(process: subprocess.Popen) -> None:
    """SIGINT to the child's own process group, then SIGKILL after 30 s."""
    if process.poll() is not None:
        return
    _say(f"stopping process {process.pid}")
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _worker_result(python: str, args: list[str], log: Path, threads: int, timeout_s: float) -> dict:
    rc = _run([python, __file__, *args], log, threads, timeout_s)
    results = [l[len(RESULT_TAG):] for l in log.read_text(errors="replace").splitlines() if l.startswith(RESULT_TAG)]
    if rc != 0 or not results:
        raise RuntimeError(f"worker {args[:4]} failed (exit {rc}); end of {log}:\n{_tail(log)}")
    return json.loads(results[-1])


def make_data(args: argparse.Namespace, work: Path) -> tuple[Path, Path]:
    if args.train or args.valid:
        if not (args.train and args.valid):
            raise SystemExit("give both --train and --valid, or neither")
        return Path(args.train).resolve(), Path(args.valid).resolve()
    train, valid, stamp = work / "train.extxyz", work / "valid.extxyz", work / "data.json"
    settings = {"data": args.data, "frames": args.frames, "valid_frames": args.valid_frames, "seed": args.seed,
                "frames_per_trajectory": args.frames_per_trajectory}
    # a stamp without "data" predates --data and was made by the EMT generator
    if train.exists() and valid.exists() and stamp.exists() and {"data": "emt", **json.loads(stamp.read_text())} == settings:
        _say(f"reusing {train} and {valid}")
        return train, valid
    cmd = [sys.executable, "-m", "equiformer.atomistic.datasets", args.data, "--frames", str(args.frames),
           "--seed", str(args.seed), "--out", str(train), "--valid-frames", str(args.valid_frames),
           "--valid-out", str(valid), "--frames-per-trajectory", str(args.frames_per_trajectory)]
    if _run(cmd, work / "data.log", 1, 3600) != 0:
        raise RuntimeError(f"data generation failed:\n{_tail(work / 'data.log')}")
    stamp.write_text(json.dumps(settings))
    return train, valid


def train_ours(args: argparse.Namespace, train: Path, valid: Path, work: Path) -> dict:
    out = work / "ours"
    cmd = [sys.executable, "-m", "equiformer.atomistic.train", "--data", str(train), "--valid", str(valid),
           "--out", str(out), "--overwrite", "--max-time", str(args.minutes), "--threads", str(args.threads),
           "--cutoff", str(args.cutoff), "--batch-size", str(args.batch_size), "--device", "cpu",
           "--seed", str(args.seed), *shlex.split(args.ours_args)]
    out.mkdir(parents=True, exist_ok=True)
    rc = _run(cmd, work / "ours.log", args.threads, 2 * args.minutes * 60 + 900)
    if rc != 0:
        raise RuntimeError(f"our training failed (exit {rc}):\n{_tail(work / 'ours.log')}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train_records = [r for r in records if r.get("kind") == "train"]
    end = [r for r in records if r.get("kind") == "end"][-1]
    config = json.loads((out / "config.json").read_text()) if (out / "config.json").exists() else {}
    last_val = [r for r in records if r.get("kind") == "val"][-1]
    return {"model": str(out / "potential.pt"), "steps": int(end["step"]), "status": end.get("status"),
            "scheduled_steps": config.get("steps", config.get("config", {}).get("steps")),
            "trained_s": float(train_records[-1]["elapsed_s"]) if train_records else None,
            "own_validation": {k: last_val.get(k) for k in ("energy_mae", "forces_mae", "forces_rmse")}}


def mace_arguments(args: argparse.Namespace, train: Path, valid: Path, folder: Path) -> list[str]:
    return [
        "--name", "mace", "--seed", str(args.seed), "--work_dir", str(folder),
        "--checkpoints_dir", str(folder / "checkpoints"), "--model_dir", str(folder),
        "--train_file", str(train), "--valid_file", str(valid),
        # ase's extxyz reader puts the labels on a SinglePointCalculator as energy/forces/stress;
        # MACE copies those keys to REF_* itself (with a warning)
        "--energy_key", "energy", "--forces_key", "forces", "--stress_key", "stress",
        "--E0s", "average", "--model", "MACE", "--num_interactions", "2",
        "--num_channels", str(args.mace_channels), "--max_L", str(args.mace_max_l),
        "--correlation", "3", "--r_max", str(args.cutoff),
        "--loss", "weighted", "--energy_weight", "1", "--forces_weight", "100",
        "--batch_size", str(args.batch_size), "--valid_batch_size", "10",
        "--ema", "--ema_decay", "0.99", "--amsgrad", "--eval_interval", "1",
        "--save_all_checkpoints", "--save_cpu", "--plot", "False", "--pin_memory", "False",
        "--device", "cpu", "--default_dtype", "float32",
        *shlex.split(args.mace_args),
    ]


def train_mace(args: argparse.Namespace, train: Path, valid: Path, work: Path) -> dict:
    folder = work / "mace"
    folder.mkdir(parents=True, exist_ok=True)
    for _, path in _checkpoint_epochs(folder / "checkpoints"):  # a previous run's: never restore those
        path.unlink()
    for stale in (folder / "mace.model", folder / "summary.json"):
        stale.unlink(missing_ok=True)
    base = mace_arguments(args, train, valid, folder)
    summary = folder / "summary.json"
    budget = args.minutes * 60
    cmd = [args.mace_python, __file__, "--worker", "mace-train", "--budget-s", str(budget),
           "--summary", str(summary), "--", *base, "--max_num_epochs", "100000"]
    rc = _run(cmd, work / "mace_train.log", args.threads, 2 * budget + 900)
    saved = _checkpoint_epochs(folder / "checkpoints")
    if rc != 0 or not saved or not summary.exists():
        raise RuntimeError(f"MACE training failed (exit {rc}):\n{_tail(work / 'mace_train.log')}")
    trained = json.loads(summary.read_text())
    last_epoch = saved[-1][0]

    # Restore and save the last checkpoint as mace.model without training: MACE validates once
    # first (give it two frames), and evaluates nothing at the end (--skip_evaluate_heads).
    import ase.io

    head = folder / "valid_head.extxyz"
    ase.io.write(head, ase.io.read(valid, ":2"), format="extxyz")
    final = [a if a != str(valid) else str(head) for a in base]
    cmd = [args.mace_python, __file__, "--worker", "mace-train", "--budget-s", "-1", "--summary",
           str(folder / "summary_restore.json"), "--", *final, "--max_num_epochs", str(last_epoch),
           "--restart_latest", "--skip_evaluate_heads", "Default"]
    rc = _run(cmd, work / "mace_restore.log", args.threads, 1800)
    model = folder / "mace.model"
    restore_log = (work / "mace_restore.log").read_text(errors="replace")
    if rc != 0 or not model.exists() or f"from epoch {last_epoch} for evaluation" not in restore_log:
        raise RuntimeError(f"saving MACE's checkpoint as a model failed (exit {rc}):\n{_tail(work / 'mace_restore.log')}")

    own = _mace_own_validation(folder / "results" / f"mace_run-{args.seed}_train.txt", last_epoch)
    return {"model": str(model), "steps": trained["steps"], "status": trained["status"],
            "epochs_started": trained["epochs"], "checkpoint_epoch": last_epoch,
            "trained_s": trained["trained_s"], "mace": trained["mace"], "own_validation": own}


def _mace_own_validation(results: Path, epoch: int) -> dict:
    """MACE's own validation of that epoch (EMA weights), from its results file, in meV."""
    try:
        records = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return {}
    evals = [r for r in records if r.get("mode") == "eval" and r.get("epoch") == epoch]
    if not evals:
        return {}
    r = evals[-1]
    return {"energy_mae": 1e3 * r["mae_e_per_atom"], "energy_rmse": 1e3 * r["rmse_e_per_atom"],
            "forces_mae": 1e3 * r["mae_f"], "forces_rmse": 1e3 * r["rmse_f"]}


def _count_frames(path: Path) -> int:
    import ase.io

    return len(ase.io.read(path, ":"))


def _fmt(value, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, spec)


# (title, width, value of a row, format); a row: {"steps", "trained_s", "eval": {...}, ...}
_COLUMNS = (
    ("params", 8, lambda r, n, b: r["eval"]["parameters"], ",d"),
    ("steps", 6, lambda r, n, b: r["steps"], "d"),
    ("epochs", 6, lambda r, n, b: r["steps"] * b / n, ".1f"),
    ("trained s", 9, lambda r, n, b: r["trained_s"], ".0f"),
    ("E MAE", 8, lambda r, n, b: r["eval"]["energy_mae"], ".2f"),
    ("E RMSE", 8, lambda r, n, b: r["eval"]["energy_rmse"], ".2f"),
    ("F MAE", 7, lambda r, n, b: r["eval"]["forces_mae"], ".1f"),
    ("F RMSE", 7, lambda r, n, b: r["eval"]["forces_rmse"], ".1f"),
    ("F MAE/RMS", 9, lambda r, n, b: r["eval"]["forces_mae"] / r["eval"]["forces_rms"], ".3f"),
    ("MD steps/s", 10, lambda r, n, b: r["eval"]["md_steps_per_s"], ".2f"),
)
_NO_RATIO = ("epochs", "trained s")  # epochs: the same ratio as steps; time: the same budget


def report(rows: dict[str, dict], n_train: int, batch_size: int) -> None:
    first = next(iter(rows.values()))["eval"]
    print(f"\nvalidation ({first['frames']} frames): E per atom in meV/atom, F components in meV/Å, the "
          f"same ASE evaluation for both (float64); MD: {first['md_system']}, float32")
    print(f"{'model':<9} " + " ".join(f"{title:>{width}}" for title, width, _, _ in _COLUMNS))
    values = {name: [get(row, n_train, batch_size) for _, _, get, _ in _COLUMNS] for name, row in rows.items()}
    for name, row in values.items():
        print(f"{name:<9} " + " ".join(f"{_fmt(v, spec):>{width}}" for v, (_, width, _, spec) in zip(row, _COLUMNS)))
    if {"ours", "mace"} <= rows.keys():
        cells = []
        for o, m, (title, width, _, _) in zip(values["ours"], values["mace"], _COLUMNS):
            ratio = o / m if title not in _NO_RATIO and o is not None and m else None
            cells.append(f"{_fmt(ratio, '.2f'):>{width}}")
        print(f"{'ours/MACE':<9} " + " ".join(cells))
        print("(ratios of errors below 1: ours more accurate; of MD steps/s above 1: ours faster)")
    print(f"validation forces' RMS (the error of predicting zero): {first['forces_rms']:.1f} meV/Å")
    for name, row in rows.items():
        own = row.get("own_validation") or {}
        if own:
            text = ", ".join(f"{k} {v:.2f}" for k, v in own.items() if v is not None)
            print(f"{name}'s own last validation log (cross-check, meV): {text}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="training wall-clock budget of each model (default 10)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of both, in training, evaluation and MD (default 2)")
    parser.add_argument("--data", choices=DATA_KINDS, default="emt",
                        help="emt: ASE EMT Cu/Au crystals and slab, MD on 108 Cu atoms; xtb: GFN2-xTB molecules "
                             "(needs tblite), MD on a cluster of them (default emt)")
    parser.add_argument("--work-dir", help="output folder (default runs/potential_vs_mace, with _quick after "
                                           "--quick and _xtb after --data xtb)")
    parser.add_argument("--train", help="training extxyz (default: generated --data data)")
    parser.add_argument("--valid", help="validation extxyz (with --train)")
    parser.add_argument("--frames", type=int, default=1000, help="training frames to generate (default 1000)")
    parser.add_argument("--valid-frames", type=int, default=200, help="validation frames to generate (default 200)")
    parser.add_argument("--frames-per-trajectory", type=int, default=10, help="of the generated data (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="data, initial weights and data order (default 0)")
    parser.add_argument("--cutoff", type=float, default=5.0, help="ours' cutoff and MACE's r_max, Å (default 5)")
    parser.add_argument("--batch-size", type=int, default=5, help="structures per step, both (default 5)")
    parser.add_argument("--mace-python", default=str(DEFAULT_MACE_PYTHON), help="python of the MACE venv")
    parser.add_argument("--mace-channels", type=int, default=32, help="MACE --num_channels (default 32)")
    parser.add_argument("--mace-max-l", type=int, default=1, help="MACE --max_L (default 1)")
    parser.add_argument("--mace-args", default="", help="more flags for mace run_train, one string")
    parser.add_argument("--ours-args", default="", help="more flags for equiformer.atomistic.train, one string")
    parser.add_argument("--md-steps", type=int, default=20, help="timed MD steps, after 2 warm-up steps (default 20)")
    parser.add_argument("--only", choices=("ours", "mace"), help="train and evaluate one model only")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20+8 frames, 1 minute each, 5 MD steps")
    parser.add_argument("--worker", choices=("evaluate", "mace-train"), help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--budget-s", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--summary", help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker == "evaluate":
        result = _worker_evaluate(args.kind, args.model, args.valid, args.threads, args.md_steps, args.data,
                                  args.cutoff)
        print(RESULT_TAG + json.dumps(result), flush=True)
        return 0
    if args.worker == "mace-train":
        rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
        return _worker_mace_train(args.budget_s, args.summary, rest)
    if args.rest:
        parser.error(f"unrecognized arguments: {' '.join(args.rest)}")

    if args.quick:
        args.minutes, args.frames, args.valid_frames, args.frames_per_trajectory = 1.0, 20, 8, 2
        args.md_steps = 5
    if args.work_dir is None:
        name = "potential_vs_mace" + ("_quick" if args.quick else "") + ("" if args.data == "emt" else f"_{args.data}")
        args.work_dir = str(REPO / "runs" / name)
    models = [args.only] if args.only else ["ours", "mace"]
    if "mace" in models and not Path(args.mace_python).exists():
        raise SystemExit(f"{args.mace_python} not found: make the MACE venv first (see this script's docstring)")
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)

    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from common import machine_line

    torch.set_num_threads(args.threads)
    print(machine_line(torch.device("cpu")))
    _say(f"{args.data} data, budget {args.minutes:g} min of training each, {args.threads} threads, work folder {work}")
    train, valid = make_data(args, work)
    n_train = _count_frames(train)
    _say(f"data: {n_train} training frames ({train}), {_count_frames(valid)} validation frames ({valid})")

    rows: dict[str, dict] = {}
    trainers = {"ours": train_ours, "mace": train_mace}
    pythons = {"ours": sys.executable, "mace": args.mace_python}
    for name in models:
        _say(f"training {name} for {args.minutes:g} min")
        rows[name] = trainers[name](args, train, valid, work)
        _say(f"{name}: {rows[name]['steps']} steps in {_fmt(rows[name]['trained_s'], '.0f')} s ({rows[name]['status']})")
    for name in models:
        _say(f"evaluating {name}")
        rows[name]["eval"] = _worker_result(
            pythons[name], ["--worker", "evaluate", "--kind", name, "--model", rows[name]["model"], "--valid",
                            str(valid), "--threads", str(args.threads), "--md-steps", str(args.md_steps),
                            "--data", args.data, "--cutoff", str(args.cutoff)],
            work / f"{name}_eval.log", args.threads, 3600)

    (work / "results.json").write_text(json.dumps(
        {"data": args.data, "minutes": args.minutes, "threads": args.threads, "batch_size": args.batch_size,
         "cutoff": args.cutoff,
         "train": str(train), "valid": str(valid), "train_frames": n_train, "models": rows}, indent=2))
    report(rows, n_train, args.batch_size)
    if "ours" in rows and rows["ours"].get("scheduled_steps") and rows["ours"]["status"] == "stopped":
        done, planned = rows["ours"]["steps"], rows["ours"]["scheduled_steps"]
        if done < 0.9 * planned:
            print(f"note: ours stopped at step {done} of a cosine schedule over {planned}: its learning rate had not "
                  f"decayed; --ours-args \"--steps {done}\" would end the decay within the budget")
    if "mace" in rows:
        m = rows["mace"]
        print(f"MACE {m['mace']}: {m['epochs_started']} epoch(s) begun, evaluated checkpoint of epoch {m['checkpoint_epoch']}")
    print(f"details: {work / 'results.json'}; logs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
