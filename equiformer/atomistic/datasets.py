"""Labelled training data for interatomic potentials, generated offline (extended XYZ, ASE units).

Two generators, both running Langevin MD with someone else's physics and writing every kept
frame through ASE's own extxyz writer from a ``SinglePointCalculator``, so that
``ase.io.read(path, ":")`` gives back frames whose ``get_potential_energy()``, ``get_forces()``
and (for EMT) ``get_stress()`` are the labels:

* ``make_emt_dataset``: ASE's ``EMT`` on periodic fcc Cu (32-108 atoms), a random Cu-Au alloy,
  Cu with a vacancy and a Cu(111) slab, 300-1,200 K, with random small cell strains.
* ``make_xtb_dataset``: GFN2-xTB (``pip install tblite``) on small organic molecules, 300-600 K,
  energy and forces only (the molecules have no cell).

Every label comes from a fresh calculator evaluated on the geometry exactly as the file stores
it (positions are written with 8 decimals), so re-evaluating a frame read back from the file
reproduces its energy and stress to round-off; forces are stored with 8 decimals as well.
Each frame's ``info`` carries ``config_type`` (the kind or molecule) and ``md_temperature_K``.

Both are deterministic for a ``seed``; ``stream`` picks an independent random stream of the same
seed (the command line uses stream 0 for training and 1 for validation)::

    python -m equiformer.atomistic.datasets emt --frames 1000 --seed 0 --out train.extxyz \\
        --valid-frames 100 --valid-out valid.extxyz

ase is needed for both (``pip install "equiformer[atomistic]"``), tblite for xTB
(``pip install "equiformer[xtb]"``); both are imported only on use.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ase import Atoms
    from ase.calculators.calculator import Calculator

__all__ = ["EMT_KINDS", "XTB_MOLECULES", "make_emt_dataset", "make_xtb_dataset"]

EMT_KINDS = ("bulk", "alloy", "vacancy", "slab")
XTB_MOLECULES = ("H2O", "CH4", "C2H6", "CH3OH", "C6H6")

_CU_LATTICE = 3.61  # Å, fcc Cu near experiment; EMT's minimum is 3.59 Å (a 2 GPa offset the strains span)
_AU_LATTICE = 4.08  # Å, ASE's reference value; only used for the alloy's Vegard scaling
_SLAB_VACUUM = 6.0  # Å each side: a 12 Å gap, far beyond EMT's cutoff, so periodic images never meet


def _require_ase() -> None:
    try:
        import ase  # noqa: F401
    except ImportError as exc:  # optional dependency: say how to get it
        raise ImportError('dataset generation needs ase: pip install "equiformer[atomistic]"') from exc


def _tblite_calculator_class() -> type:
    try:
        from tblite.ase import TBLite
    except ImportError as exc:
        raise ImportError(
            'make_xtb_dataset needs tblite (GFN2-xTB), which is not installed: pip install tblite '
            '(or pip install "equiformer[xtb]")'
        ) from exc
    return TBLite


def _rng(seed: int, stream: int) -> np.random.Generator:
    # spawn_key makes (seed, stream) the stream-th child of SeedSequence(seed): independent streams
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream,)))


def _as_stored(atoms: Atoms) -> Atoms:
    """``atoms``' species, cell, pbc and positions exactly as an extxyz file stores them.

    The writer rounds positions to 8 decimals; labelling the rounded geometry (not the MD one)
    is what lets a frame read back from the file reproduce its own labels.  The round trip goes
    through ASE itself so it follows whatever precision ASE's writer uses.
    """
    import ase.io
    from ase import Atoms

    plain = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    buffer = io.StringIO()
    ase.io.write(buffer, plain, format="extxyz")
    buffer.seek(0)
    return ase.io.read(buffer, format="extxyz")


def _labelled(
    atoms: Atoms, calculator: Calculator, properties: Sequence[str], info: dict[str, Any]
) -> Atoms:
    """A stored-precision copy of ``atoms`` carrying ``calculator``'s results as single-point labels."""
    from ase.calculators.singlepoint import SinglePointCalculator

    frame = _as_stored(atoms)
    frame.calc = calculator
    results = {"energy": frame.get_potential_energy(), "forces": frame.get_forces()}
    if "stress" in properties:
        results["stress"] = frame.get_stress(voigt=True)
    frame.calc = SinglePointCalculator(frame, **results)
    frame.info.update(info)
    return frame


def _md_snapshots(
    atoms: Atoms,
    rng: np.random.Generator,
    *,
    temperature_K: float,
    timestep_fs: float,
    friction_per_fs: float,
    equilibration_steps: int,
    stride: int,
    count: int,
) -> Iterator[Atoms]:
    """Copies of ``atoms`` (calculator attached) every ``stride`` Langevin steps after equilibration."""
    from ase import units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary

    try:
        from ase.md.velocitydistribution import thermalize_momenta  # ASE >= 3.29
    except ImportError:  # older ASE: the same Maxwell-Boltzmann draw under its former name
        from ase.md.velocitydistribution import (
            MaxwellBoltzmannDistribution as thermalize_momenta,
        )

    thermalize_momenta(atoms, temperature_K=temperature_K, rng=rng)
    Stationary(atoms)
    # No drift of the whole structure; ASE deprecates Langevin(fixcm=True) in favour of FixCom.
    # The constraint only steers the MD: labels come from a constraint-free copy.
    atoms.set_constraint(FixCom())
    dynamics = Langevin(
        atoms,
        timestep_fs * units.fs,
        temperature_K=temperature_K,
        friction=friction_per_fs / units.fs,
        fixcm=False,
        rng=rng,
    )
    dynamics.run(equilibration_steps)
    for _ in range(count):
        dynamics.run(stride)
        yield atoms.copy()


class _Progress:
    """Frame counts to stderr, about every 10 %, when asked for."""

    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.every = max(1, total // 10)
        self.start = time.perf_counter()

    def update(self, done: int) -> None:
        if self.enabled and (done % self.every == 0 or done == self.total):
            elapsed = time.perf_counter() - self.start
            print(f"{self.label}: {done}/{self.total} frames ({elapsed:.1f} s)", file=sys.stderr, flush=True)


def _write_frames(path: str | os.PathLike[str], frames: Iterator[Atoms], total: int, progress: _Progress) -> Path:
    """Stream ``frames`` into ``path`` via a temporary file, so a failed run leaves no half dataset."""
    import ase.io

    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    done = 0
    try:
        with open(partial, "w") as handle:
            for frame in frames:
                ase.io.write(handle, frame, format="extxyz")
                done += 1
                progress.update(done)
        if done != total:  # a generator bug, not a user error: never hand back a short file silently
            raise RuntimeError(f"generated {done} frames instead of {total}")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _check_counts(frames: int, frames_per_trajectory: int, stride: int, equilibration_steps: int) -> None:
    if frames < 1 or frames_per_trajectory < 1 or stride < 1:
        raise ValueError(
            f"frames, frames_per_trajectory and stride must be positive, got {frames}, "
            f"{frames_per_trajectory}, {stride}"
        )
    if equilibration_steps < 0:
        raise ValueError(f"equilibration_steps must be non-negative, got {equilibration_steps}")


def _check_range(name: str, bounds: tuple[float, float]) -> tuple[float, float]:
    low, high = float(bounds[0]), float(bounds[1])
    if not 0.0 < low <= high:
        raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {bounds}")
    return low, high


# ---------------------------------------------------------------------------------------- EMT


def _emt_structure(kind: str, rng: np.random.Generator, max_strain: float) -> Atoms:
    """One starting structure of ``kind``, strained by a random small symmetric strain."""
    from ase.build import bulk, fcc111

    if kind == "slab":
        width = int(rng.choice([3, 4]))
        layers = int(rng.choice([4, 5, 6]))  # 36-96 atoms; pbc (True, True, False) by default
        atoms = fcc111("Cu", size=(width, width, layers), a=_CU_LATTICE, vacuum=_SLAB_VACUUM)
    else:
        repeats = tuple(int(r) for r in rng.choice([2, 3], size=3))  # 32, 48, 72 or 108 atoms
        atoms = bulk("Cu", "fcc", a=_CU_LATTICE, cubic=True).repeat(repeats)
        if kind == "alloy":
            fraction = float(rng.uniform(0.1, 0.5))
            count = max(1, round(fraction * len(atoms)))
            atoms.symbols[rng.choice(len(atoms), size=count, replace=False)] = "Au"
            # Vegard's law: without it the substituted cell sits under GPa-scale compression
            scale = 1.0 + (_AU_LATTICE / _CU_LATTICE - 1.0) * count / len(atoms)
            atoms.set_cell(atoms.cell[:] * scale, scale_atoms=True)
        elif kind == "vacancy":
            del atoms[int(rng.integers(len(atoms)))]
        elif kind != "bulk":
            raise ValueError(f"unknown EMT structure kind {kind!r}; choose from {EMT_KINDS}")

    strain = rng.uniform(-max_strain, max_strain, size=(3, 3))
    strain = 0.5 * (strain + strain.T)  # symmetric: a rotation would only turn the stress
    if kind == "slab":  # strain in plane only, keeping the vacuum gap along the surface normal
        strain[2, :] = strain[:, 2] = 0.0
    atoms.set_cell(atoms.cell[:] @ (np.eye(3) + strain), scale_atoms=True)
    return atoms


def _trajectory_frames(
    names: tuple[str, ...],
    start: Callable[[str], Atoms],
    calculator: Callable[[], Calculator],
    properties: tuple[str, ...],
    rng: np.random.Generator,
    frames: int,
    frames_per_trajectory: int,
    rattle_A: float,
    temperature_range_K: tuple[float, float],
    md: dict,
) -> Iterator[Atoms]:
    """Labelled frames of Langevin trajectories: trajectory ``t`` starts from ``start(names[t %
    len(names)])``, rattled, at a temperature drawn from the range; every frame is labelled by a
    fresh ``calculator()``, so a label is exactly what anyone re-evaluating that frame gets."""
    for trajectory in range(math.ceil(frames / frames_per_trajectory)):
        name = names[trajectory % len(names)]
        atoms = start(name)
        atoms.rattle(stdev=rattle_A, rng=rng)
        temperature = float(rng.uniform(*temperature_range_K))
        atoms.calc = calculator()
        count = min(frames_per_trajectory, frames - trajectory * frames_per_trajectory)
        for snapshot in _md_snapshots(atoms, rng, temperature_K=temperature, count=count, **md):
            info = {"config_type": name, "md_temperature_K": temperature}
            yield _labelled(snapshot, calculator(), properties, info)


def make_emt_dataset(
    path: str | os.PathLike[str],
    frames: int,
    seed: int,
    *,
    kinds: Sequence[str] = EMT_KINDS,
    stream: int = 0,
    temperature_range_K: tuple[float, float] = (300.0, 1200.0),
    frames_per_trajectory: int = 10,
    stride: int = 5,
    equilibration_steps: int = 25,
    timestep_fs: float = 4.0,
    friction_per_fs: float = 0.02,
    max_strain: float = 0.02,
    rattle_A: float = 0.05,
    progress: bool = False,
) -> Path:
    """Write ``frames`` EMT-labelled frames (energy, forces, 6-Voigt stress) to the extxyz ``path``.

    Trajectory ``t`` starts from ``kinds[t % len(kinds)]``: ``"bulk"`` (periodic fcc Cu, 2-3
    conventional cells per axis, 32-108 atoms), ``"alloy"`` (the same with 10-50 % random Au,
    lattice scaled by Vegard's law), ``"vacancy"`` (one random Cu removed) or ``"slab"``
    (``fcc111`` Cu, 3x3 or 4x4 by 4-6 layers, vacuum along z, pbc on x and y only).  Each gets a
    random symmetric strain (entries up to ``max_strain``, in-plane for slabs), a Gaussian
    rattle of ``rattle_A`` Å, velocities and a Langevin thermostat at a temperature drawn from
    ``temperature_range_K``, ``equilibration_steps`` unrecorded steps, then one frame every
    ``stride`` steps, ``frames_per_trajectory`` of them (the last trajectory may give fewer).
    Repeating a kind in ``kinds`` weights it.  Returns the path written.
    """
    _require_ase()
    from ase.calculators.emt import EMT

    _check_counts(frames, frames_per_trajectory, stride, equilibration_steps)
    t_low, t_high = _check_range("temperature_range_K", temperature_range_K)
    kinds = tuple(kinds)
    unknown = sorted(set(kinds) - set(EMT_KINDS))
    if not kinds or unknown:
        raise ValueError(f"kinds must be a non-empty selection of {EMT_KINDS}, got {kinds}")
    rng = _rng(seed, stream)

    md = dict(timestep_fs=timestep_fs, friction_per_fs=friction_per_fs, equilibration_steps=equilibration_steps, stride=stride)
    generate = _trajectory_frames(
        kinds, lambda kind: _emt_structure(kind, rng, max_strain), EMT, ("energy", "forces", "stress"),
        rng, frames, frames_per_trajectory, rattle_A, (t_low, t_high), md,
    )

    return _write_frames(path, generate, frames, _Progress("emt", frames, progress))


# ---------------------------------------------------------------------------------------- xTB


@contextlib.contextmanager
def _openmp_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` OpenMP threads (None: leave the setting alone).

    tblite parallelises each SCF with OpenMP, which for molecules of a few atoms only costs (more
    than ten times slower with 2 threads than with 1 on a busy 2-core machine).  tblite's
    wheels link the libgomp that torch has already loaded, and ``torch.set_num_threads`` sets that
    library's thread count; the setting is restored afterwards.
    """
    if threads is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def make_xtb_dataset(
    path: str | os.PathLike[str],
    frames: int,
    seed: int,
    *,
    molecules: Sequence[str] = XTB_MOLECULES,
    stream: int = 0,
    method: str = "GFN2-xTB",
    temperature_range_K: tuple[float, float] = (300.0, 600.0),
    frames_per_trajectory: int = 10,
    stride: int = 10,
    equilibration_steps: int = 40,
    timestep_fs: float = 0.5,
    friction_per_fs: float = 0.01,
    rattle_A: float = 0.02,
    threads: int | None = 1,
    progress: bool = False,
) -> Path:
    """Write ``frames`` GFN2-xTB-labelled molecular frames (energy in eV, forces in eV/Å) to ``path``.

    Trajectory ``t`` starts from ``ase.build.molecule(molecules[t % len(molecules)])`` (no cell,
    pbc False, so no stress), rattled by ``rattle_A`` Å, then runs Langevin MD at a temperature
    drawn from ``temperature_range_K`` with a ``timestep_fs`` short enough for hydrogen: after
    ``equilibration_steps`` unrecorded steps, one frame every ``stride`` steps.  Labels come from
    tblite's ASE calculator (``tblite.ase.TBLite(method=method)``), a fresh one per frame, since
    the MD calculator restarts each SCF from the previous step's wavefunction.  tblite runs with
    ``threads`` OpenMP threads (one is fastest for such small molecules; None keeps the process
    setting); the labels do not depend on it.  Raises ImportError naming ``pip install tblite``
    when tblite is missing.  Returns the path written.
    """
    _require_ase()
    tblite_calculator = _tblite_calculator_class()
    from ase.build import molecule

    _check_counts(frames, frames_per_trajectory, stride, equilibration_steps)
    t_low, t_high = _check_range("temperature_range_K", temperature_range_K)
    molecules = tuple(molecules)
    if not molecules:
        raise ValueError("molecules must name at least one ase.build.molecule structure")
    rng = _rng(seed, stream)

    def calculator() -> Calculator:
        return tblite_calculator(method=method, verbosity=0)  # verbosity 0: no SCF printout on stdout

    md = dict(timestep_fs=timestep_fs, friction_per_fs=friction_per_fs, equilibration_steps=equilibration_steps, stride=stride)
    generate = _trajectory_frames(
        molecules, molecule, calculator, ("energy", "forces"), rng, frames, frames_per_trajectory, rattle_A, (t_low, t_high), md,
    )

    with _openmp_threads(threads):
        return _write_frames(path, generate, frames, _Progress("xtb", frames, progress))


# ------------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m equiformer.atomistic.datasets",
        description="Generate labelled extended-XYZ data for interatomic potentials, offline.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def add_common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--frames", type=int, required=True, help="training frames to write")
        sub.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        sub.add_argument("--out", type=Path, required=True, help="training extxyz file")
        sub.add_argument("--valid-frames", type=int, default=0,
                         help="also write this many validation frames, from an independent stream of the seed")
        sub.add_argument("--valid-out", type=Path, help="validation extxyz file (needed with --valid-frames)")
        sub.add_argument("--frames-per-trajectory", type=int, default=10, help="frames kept per MD run (default 10)")
        sub.add_argument("--quiet", action="store_true", help="no progress on stderr")

    emt = commands.add_parser("emt", help="ASE EMT: Cu bulk, Cu-Au alloy, vacancy, Cu(111) slab")
    add_common(emt)
    emt.add_argument("--kinds", nargs="+", choices=EMT_KINDS, default=list(EMT_KINDS),
                     help="structure kinds, cycled over trajectories (default: all)")
    xtb = commands.add_parser("xtb", help="GFN2-xTB via tblite: small organic molecules (needs pip install tblite)")
    add_common(xtb)
    xtb.add_argument("--molecules", nargs="+", default=list(XTB_MOLECULES),
                     help="ase.build.molecule names, cycled over trajectories")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.valid_frames < 0:
        parser.error("--valid-frames must be non-negative")
    if bool(args.valid_frames) != (args.valid_out is not None):
        parser.error("--valid-frames and --valid-out go together")
    if args.valid_out is not None and args.valid_out.resolve() == args.out.resolve():
        parser.error("--valid-out must differ from --out")

    generate: Callable[..., Path]
    if args.command == "emt":
        generate, options = make_emt_dataset, {"kinds": args.kinds}
    else:
        generate, options = make_xtb_dataset, {"molecules": args.molecules}
    options.update(frames_per_trajectory=args.frames_per_trajectory, progress=not args.quiet)

    start = time.perf_counter()
    jobs = [(args.out, args.frames, 0)]
    if args.valid_frames:
        jobs.append((args.valid_out, args.valid_frames, 1))  # stream 1: no trajectory shared with training
    for out, count, stream in jobs:
        generate(out, count, args.seed, stream=stream, **options)
        if not args.quiet:
            print(f"wrote {count} frames to {out}", file=sys.stderr)
    if not args.quiet:
        print(f"done in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
