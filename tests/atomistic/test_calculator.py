"""EquiformerCalculator: the Potential's numbers through ASE, finite differences, MD, optimisers
and cell filters, checkpoints and float32.  Tiny models in float64 with randomised weights."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

ase = pytest.importorskip("ase")
pytest.importorskip("vesin")

from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.filters import FrechetCellFilter
from ase.md.langevin import Langevin
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS, FIRE

from equiformer.atomistic import EquiformerCalculator, Potential
from equiformer.testing import randomize_parameters

CUTOFF = 3.0
ELEMENTS = (1, 6, 8, 29)


def make_potential(seed: int = 0) -> Potential:
    """A tiny float64 potential with every weight moved off its initial value, nonzero ref / scale."""
    torch.manual_seed(seed)
    potential = Potential(ELEMENTS, CUTOFF, dim=(8, 4, 4), heads=2, dim_head=4, radial_hidden_dim=16, num_radial_basis=8)
    potential = potential.to(torch.float64)
    randomize_parameters(potential, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        potential.ref.copy_(torch.tensor([-13.6, -1030.0, -2040.0, -45.0], dtype=torch.float64, device="cpu"))
        potential.scale.fill_(0.8)
    return potential


@pytest.fixture(scope="module")
def potential() -> Potential:
    return make_potential()


def triclinic() -> ase.Atoms:
    """Three atoms in a triclinic cell thinner than the cutoff, one of them outside the cell."""
    cell = np.array([[2.6, 0.0, 0.0], [0.7, 2.4, 0.0], [-0.5, 0.4, 2.8]])
    fractional = np.array([[0.1, 0.2, 0.05], [0.55, 0.45, 0.6], [1.2, -0.1, 0.35]])
    return ase.Atoms(numbers=[6, 8, 1], positions=fractional @ cell, cell=cell, pbc=True)


def molecule() -> ase.Atoms:
    positions = [[0.0, 0.0, 0.0], [0.96, 0.0, 0.1], [-0.3, 0.9, -0.2], [0.4, -1.3, 0.6], [2.1, 0.8, -1.0]]
    return ase.Atoms(numbers=[8, 1, 1, 6, 29], positions=positions)


def copper(calc: EquiformerCalculator) -> ase.Atoms:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)  # 4 atoms, cell longer than the cutoff
    atoms.calc = calc
    return atoms


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_results_match_the_potential(potential: Potential) -> None:
    atoms = triclinic()
    atoms.calc = EquiformerCalculator(potential)
    out = potential(
        torch.tensor(atoms.numbers, device="cpu"),
        torch.tensor(atoms.positions, device="cpu"),
        torch.tensor(atoms.cell.array, device="cpu"),
        stress=True,
    )
    assert atoms.get_potential_energy() == float(out["energy"][0])
    assert atoms.get_potential_energy(force_consistent=True) == atoms.get_potential_energy()
    forces = atoms.get_forces()
    assert forces.dtype == np.float64 and forces.shape == (3, 3)
    assert np.array_equal(forces, out["forces"].numpy())
    s = out["stress"][0].numpy()
    assert np.array_equal(atoms.get_stress(), [s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
    assert np.array_equal(atoms.get_stress(voigt=False), s)


@pytest.mark.parametrize("make", [triclinic, molecule])
def test_forces_equal_finite_differences(potential: Potential, make) -> None:
    atoms = make()
    atoms.calc = EquiformerCalculator(potential)
    numerical = calculate_numerical_forces(atoms, eps=1e-4)
    assert relative(atoms.get_forces(), numerical) <= 1e-6


def test_stress_equals_finite_differences(potential: Potential) -> None:
    atoms = triclinic()
    atoms.calc = EquiformerCalculator(potential)
    numerical = calculate_numerical_stress(atoms, eps=1e-5)
    assert np.abs(numerical).max() > 1e-4  # a real test, not zeros against zeros
    assert relative(atoms.get_stress(), numerical) <= 1e-6


def test_stress_of_a_molecule_is_not_available(potential: Potential) -> None:
    atoms = molecule()
    atoms.calc = EquiformerCalculator(potential)
    assert np.isfinite(atoms.get_forces()).all()
    with pytest.raises(PropertyNotImplementedError, match="fully periodic"):
        atoms.get_stress()


def test_molecular_dynamics_runs(potential: Potential) -> None:
    calc = EquiformerCalculator(potential)
    atoms = copper(calc)
    atoms.rattle(0.05, seed=0)
    energies = []
    VelocityVerlet(atoms, timestep=1.0 * ase.units.fs, logfile=None).run(3)
    energies.append(atoms.get_total_energy())
    dyn = Langevin(atoms, 1.0 * ase.units.fs, temperature_K=300, friction=0.02, fixcm=False, rng=np.random.default_rng(0), logfile=None)
    dyn.attach(lambda: energies.append(atoms.get_total_energy()), interval=1)
    dyn.run(3)
    assert len(energies) >= 4 and np.isfinite(energies).all()
    assert np.isfinite(atoms.get_forces()).all() and np.isfinite(atoms.get_stress()).all()


def test_optimisers_reduce_the_largest_force(potential: Potential) -> None:
    calc = EquiformerCalculator(potential)
    # The random network's perfect fcc lattice is a stationary point but not a minimum: relax to
    # a nearby minimum first, then rattle around it.
    minimum = copper(calc)
    minimum.rattle(0.05, seed=0)
    assert BFGS(minimum, logfile=None).run(fmax=1e-3, steps=200)
    for optimizer in (BFGS, FIRE):
        atoms = minimum.copy()
        atoms.rattle(0.03, seed=1)
        atoms.calc = calc
        before = np.abs(atoms.get_forces()).max()
        optimizer(atoms, logfile=None).run(fmax=1e-6, steps=8)
        assert np.abs(atoms.get_forces()).max() < 0.5 * before, optimizer.__name__


def test_cell_filter_uses_the_stress(potential: Potential) -> None:
    atoms = copper(EquiformerCalculator(potential))
    atoms.rattle(0.02, seed=2)
    cell, energy = atoms.cell.array.copy(), atoms.get_potential_energy()
    assert np.abs(atoms.get_stress()).max() > 1e-4
    BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=1e-6, steps=5)
    assert np.abs(atoms.cell.array - cell).max() > 1e-4  # the stress moved the cell
    assert atoms.get_potential_energy() < energy
    assert "stress" in atoms.calc.results


def test_built_from_a_checkpoint(potential: Potential, tmp_path) -> None:
    path = tmp_path / "potential.pt"
    potential.save(path)
    atoms = triclinic()
    atoms.calc = EquiformerCalculator(path)
    other = triclinic()
    other.calc = EquiformerCalculator(potential)
    assert atoms.get_potential_energy() == other.get_potential_energy()
    assert np.array_equal(atoms.get_forces(), other.get_forces())
    assert np.array_equal(atoms.get_stress(), other.get_stress())
    atoms.calc = EquiformerCalculator(str(path))
    assert atoms.get_potential_energy() == other.get_potential_energy()


def test_float32_agrees_with_float64(potential: Potential) -> None:
    atoms = triclinic()
    atoms.calc = EquiformerCalculator(potential, dtype=torch.float32)
    assert atoms.calc.potential.dtype == torch.float32 and potential.dtype == torch.float64  # a copy was converted
    energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    assert forces.dtype == np.float64
    atoms.calc = EquiformerCalculator(potential)
    assert abs(energy - atoms.get_potential_energy()) <= 1e-4 * abs(atoms.get_potential_energy())
    assert relative(forces, atoms.get_forces()) <= 1e-4
    assert relative(stress, atoms.get_stress()) <= 1e-4


def test_a_wrong_model_is_refused() -> None:
    with pytest.raises(TypeError, match="Potential or a checkpoint path"):
        EquiformerCalculator(torch.nn.Linear(2, 2))


def test_package_imports_without_ase() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["ase"] = None  # as if ase were not installed
        import equiformer.atomistic as atomistic
        assert "EquiformerCalculator" not in atomistic.__all__ and atomistic.Potential
        try:
            from equiformer.atomistic import EquiformerCalculator
        except ImportError as exc:
            assert 'pip install "equiformer[atomistic]"' in str(exc), exc
        else:
            raise AssertionError("no ImportError without ase")
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
