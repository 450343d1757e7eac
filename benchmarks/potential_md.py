"""Molecular dynamics with the potential through ASE: speed (steps/s) and NVE energy drift.

Speed: fcc Cu cells of 108, 500 and 4,000 atoms (3^3, 5^3 and 10^3 cubic cells), velocity Verlet
at 1 fs through ``EquiformerCalculator`` (neighbour list, energy and forces every step), float32.
Drift: a 108-atom Cu cell at 300 K, float64, 2,000 steps of 1 fs NVE; prints the largest
deviation of the total energy from its start and the fitted linear drift, both per atom.  The
potential's weights are moved off their initial values (an untrained network with zero output
layers would be flat); its per-atom scale is set to give forces of an EMT-like size.

    python benchmarks/potential_md.py [--atoms 108 500 4000] [--steps 20] [--nve-steps 2000] [--device auto] [--quick]
    python benchmarks/potential_md.py --checkpoint runs/cu/potential.pt --atoms --nve-steps 2000   # a trained potential
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, pick_device  # noqa: E402

from ase import units  # noqa: E402
from ase.build import bulk  # noqa: E402
from ase.md.velocitydistribution import Stationary, thermalize_momenta  # noqa: E402
from ase.md.verlet import VelocityVerlet  # noqa: E402

from equiformer.atomistic import EquiformerCalculator, Potential  # noqa: E402
from equiformer.testing import randomize_parameters  # noqa: E402

CUTOFF = 4.5  # Å: second neighbour shell of fcc Cu (3.61 Å) and some of the third


def make_potential(quick: bool) -> Potential:
    torch.manual_seed(0)
    size = dict(dim=(8, 4, 4), depth=1) if quick else {}
    potential = Potential(elements=[29], cutoff=CUTOFF, **size).double()
    randomize_parameters(potential, std=0.05, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        potential.ref.fill_(-3.5)  # eV per Cu atom, a plausible isolated-atom reference
        potential.scale.fill_(0.05)
    return potential


def copper(repeat: int, seed: int = 0):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
    atoms.rattle(0.02, seed=seed)
    return atoms


def md_speed(potential: Potential, atoms_counts: list[int], steps: int, device: torch.device) -> None:
    print(f"{'atoms':>6} {'edges/atom':>10} {'ms/step':>9} {'steps/s':>8}   (velocity Verlet, 1 fs, float32, {device.type})")
    for count in atoms_counts:
        repeat = round((count / 4) ** (1 / 3))
        atoms = copper(repeat)
        atoms.calc = EquiformerCalculator(potential, device=device, dtype=torch.float32)
        thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
        dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
        dyn.run(2)  # warm-up: first calls build caches
        start = time.perf_counter()
        dyn.run(steps)
        seconds = (time.perf_counter() - start) / steps
        from equiformer.atomistic import batch_radius_graph  # edge count, for the record

        positions = torch.tensor(atoms.positions)
        graph = batch_radius_graph(positions, None, potential.cutoff, torch.tensor(atoms.cell.array), torch.tensor(atoms.pbc))
        print(f"{len(atoms):>6} {graph.pairs.shape[1] / len(atoms):>10.1f} {1e3 * seconds:>9.1f} {1 / seconds:>8.2f}")


def nve_drift(potential: Potential, steps: int, device: torch.device, repeat: int = 3) -> None:
    atoms = copper(repeat, seed=1)
    atoms.calc = EquiformerCalculator(potential, device=device, dtype=torch.float64)
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(1))
    Stationary(atoms)
    dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    energies = []
    dyn.attach(lambda: energies.append(atoms.get_total_energy()), interval=1)
    start = time.perf_counter()
    dyn.run(steps)
    seconds = time.perf_counter() - start
    e = np.array(energies) / len(atoms)  # eV per atom
    slope = np.polyfit(np.arange(e.size), e, 1)[0] * e.size
    temperature = atoms.get_temperature()
    print(f"NVE, {len(atoms)} atoms, float64, 1 fs, {steps} steps ({seconds:.0f} s): "
          f"max |E(t) - E(0)| = {np.abs(e - e[0]).max():.2e} eV/atom, linear drift over the run = {slope:.2e} eV/atom, "
          f"final temperature {temperature:.0f} K")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atoms", type=int, nargs="*", default=[108, 500, 4000])
    parser.add_argument("--steps", type=int, default=20, help="timed MD steps per size")
    parser.add_argument("--nve-steps", type=int, default=2000, help="0 skips the drift run")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--checkpoint", help="a trained potential (Potential.save) instead of random weights")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="tiny model, 32 atoms, few steps (smoke run)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.atoms, args.steps, args.nve_steps = [32], 3, 20
    device = pick_device(args.device)
    print(machine_line(device))
    potential = (Potential.load(args.checkpoint) if args.checkpoint else make_potential(args.quick)).to(device)
    print(f"potential: {args.checkpoint or 'random weights'}, {sum(p.numel() for p in potential.parameters())} parameters, "
          f"cutoff {potential.cutoff} Å")
    md_speed(potential, args.atoms, args.steps, device)
    if args.nve_steps:
        nve_drift(potential, args.nve_steps, device, repeat=2 if args.quick else 3)


if __name__ == "__main__":
    main()
