"""Potential: symmetries of energy / forces / stress, supercells, smoothness at the cutoff, fitted
buffers, checkpoints and input errors.  Tiny models in float64 with randomised weights."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from equiformer.atomistic import Potential
from equiformer.testing import random_reflection, random_rotation, randomize_parameters

try:  # the optional dependencies (CI installs them with .[test])
    import ase
    import vesin  # noqa: F401
except ImportError:
    ase = None
needs_atomistic = pytest.mark.skipif(ase is None, reason='needs pip install "equiformer[atomistic]"')

CUTOFF = 3.0
ELEMENTS = (1, 6, 8, 29)
F64 = torch.float64


def make_potential(dtype: torch.dtype = F64, seed: int = 0, **keywords) -> Potential:
    """A tiny potential with every weight moved off its initial value and nonzero ref / scale."""
    torch.manual_seed(seed)
    config = {"dim": (8, 4, 4), "heads": 2, "dim_head": 4, "depth": 2, "radial_hidden_dim": 16, "num_radial_basis": 8}
    potential = Potential(ELEMENTS, CUTOFF, **{**config, **keywords}).to(dtype)
    randomize_parameters(potential, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        potential.ref.copy_(torch.tensor([-13.6, -1030.0, -2040.0, -45.0], dtype=dtype, device="cpu"))
        potential.scale.fill_(0.8)
    return potential


def triclinic() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three atoms in a triclinic cell with every face distance below the cutoff (many images),
    some atoms outside the cell."""
    cell = torch.tensor([[2.6, 0.0, 0.0], [0.7, 2.4, 0.0], [-0.5, 0.4, 2.8]], dtype=F64, device="cpu")  # (3, 3)
    fractional = torch.tensor([[0.1, 0.2, 0.05], [0.55, 0.45, 0.6], [1.2, -0.1, 0.35]], dtype=F64, device="cpu")  # (3, 3)
    numbers = torch.tensor([6, 8, 1], device="cpu")  # (3,)
    return numbers, fractional @ cell, cell


def molecule() -> tuple[torch.Tensor, torch.Tensor]:
    numbers = torch.tensor([8, 1, 1, 6, 29], device="cpu")  # (5,)
    positions = torch.tensor(
        [[0.0, 0.0, 0.0], [0.96, 0.0, 0.1], [-0.3, 0.9, -0.2], [0.4, -1.3, 0.6], [2.1, 0.8, -1.0]], dtype=F64, device="cpu"
    )  # (5, 3)
    return numbers, positions


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def assert_same(out: dict, ref: dict, tol: float = 1e-10) -> None:
    for key, expected in ref.items():
        assert relative(out[key], expected) <= tol, (key, relative(out[key], expected))


# ------------------------------------------------------------------ symmetries
@needs_atomistic
@pytest.mark.parametrize("reflect", [False, True])
def test_rotation_and_reflection_of_a_periodic_cell(reflect: bool) -> None:
    potential = make_potential(reflection_equivariance=reflect)
    numbers, positions, cell = triclinic()
    base = potential(numbers, positions, cell, stress=True)
    assert base["forces"].abs().max() > 1e-3 and base["stress"].abs().max() > 1e-4  # not trivially zero
    g = torch.Generator().manual_seed(7)
    for _ in range(2):
        r = random_reflection(F64, generator=g) if reflect else random_rotation(F64, generator=g)  # (3, 3)
        moved = potential(numbers, positions @ r.T, cell @ r.T, stress=True)
        expected = {"energy": base["energy"], "forces": base["forces"] @ r.T, "stress": r @ base["stress"] @ r.T}
        assert_same(moved, expected)


@needs_atomistic
@pytest.mark.parametrize("reflect", [False, True])
def test_rotation_and_reflection_of_a_molecule(reflect: bool) -> None:
    potential = make_potential(reflection_equivariance=reflect)
    numbers, positions = molecule()
    base = potential(numbers, positions)
    r = random_reflection(F64, generator=torch.Generator().manual_seed(3)) if reflect else random_rotation(F64, generator=torch.Generator().manual_seed(3))
    moved = potential(numbers, positions @ r.T + torch.tensor([1.0, -2.0, 0.5], dtype=F64, device="cpu"))
    assert_same(moved, {"energy": base["energy"], "forces": base["forces"] @ r.T})


@needs_atomistic
def test_translation_permutation_and_wrapping_change_nothing() -> None:
    potential = make_potential()
    numbers, positions, cell = triclinic()
    base = potential(numbers, positions, cell, stress=True)
    shifted = potential(numbers, positions + torch.tensor([0.3, -7.1, 2.2], dtype=F64, device="cpu"), cell, stress=True)
    assert_same(shifted, base)
    perm = torch.tensor([2, 0, 1], device="cpu")
    permuted = potential(numbers[perm], positions[perm], cell, stress=True)
    assert_same(permuted, {**base, "forces": base["forces"][perm]})
    lattice = torch.tensor([[1, 0, -2], [0, 0, 0], [-1, 3, 1]], dtype=F64, device="cpu")  # (3, 3) image of each atom
    wrapped = potential(numbers, positions + lattice @ cell, cell, stress=True)
    assert_same(wrapped, base)


@needs_atomistic
def test_batch_equals_separate_structures() -> None:
    potential = make_potential()
    numbers, positions, cell = triclinic()
    mol_numbers, mol_positions = molecule()
    box = torch.diag(torch.tensor([30.0, 30.0, 30.0], dtype=F64, device="cpu"))  # (3, 3) a molecule in a box
    batch = potential(
        torch.cat([numbers, mol_numbers]),
        torch.cat([positions, mol_positions]),
        torch.stack([cell, box]),
        graph_index=torch.tensor([0, 0, 0, 1, 1, 1, 1, 1], device="cpu"),
        stress=True,
    )
    crystal = potential(numbers, positions, cell, stress=True)
    lone = potential(mol_numbers, mol_positions, box, stress=True)
    assert_same({"energy": batch["energy"][:1], "forces": batch["forces"][:3], "stress": batch["stress"][:1]}, crystal)
    assert_same({"energy": batch["energy"][1:], "forces": batch["forces"][3:], "stress": batch["stress"][1:]}, lone)


@needs_atomistic
def test_supercells_are_extensive() -> None:
    potential = make_potential()
    numbers, positions, cell = triclinic()
    atoms = ase.Atoms(numbers=numbers.numpy(), positions=positions.numpy(), cell=cell.numpy(), pbc=True)

    def run(a: ase.Atoms) -> dict:
        return potential(
            torch.tensor(a.numbers, device="cpu"),
            torch.tensor(a.positions, dtype=F64, device="cpu"),
            torch.tensor(a.cell.array, dtype=F64, device="cpu"),
            stress=True,
        )

    base = run(atoms)
    for repeat in [(2, 2, 2), (3, 1, 1)]:
        copies = int(np.prod(repeat))
        big = run(atoms.repeat(repeat))
        assert relative(big["energy"], copies * base["energy"]) <= 1e-10
        # atoms.repeat lists the copies one after another, each in the original order
        assert relative(big["forces"], base["forces"].repeat(copies, 1)) <= 1e-10
        assert relative(big["stress"], base["stress"]) <= 1e-10


# ------------------------------------------------------------------ the cutoff
@needs_atomistic
def test_dimer_is_smooth_across_the_cutoff() -> None:
    potential = make_potential(depth=3)
    numbers = torch.tensor([8, 1], device="cpu")
    direction = torch.tensor([0.6, -0.48, 0.64], dtype=F64, device="cpu")  # (3,) unit vector
    step = 1e-4
    distances = CUTOFF + step * torch.arange(-30, 31, dtype=F64, device="cpu")  # (61,)
    energies, forces = [], []
    for d in distances.tolist():
        positions = torch.stack([torch.zeros(3, dtype=F64, device="cpu"), d * direction])  # (2, 3)
        out = potential(numbers, positions)
        energies.append(out["energy"][0])
        forces.append(out["forces"][1] @ direction)  # force on atom 1 along the bond
    energies, forces = torch.stack(energies), torch.stack(forces)  # (61,), (61,)
    inside = distances < CUTOFF
    near = forces[inside].abs().max()
    print(f"dimer scan: max |force| within {30 * step:g} Å below the cutoff = {float(near):.3e} eV/Å")
    # beyond the cutoff the atoms are isolated: their references, no force
    isolated = potential.ref[2] + potential.ref[0]
    assert (energies[~inside] - isolated).abs().max() <= 1e-12 * abs(float(isolated))
    assert forces[~inside].abs().max() == 0
    # inside, the force fades as (cutoff - d)^2 (it is ~0.5 eV/Å at 2.5 Å) and the energy
    # reaches the plateau without a step
    assert near <= 1e-4
    assert (energies[inside] - isolated).abs().max() <= 1e-7
    # no step larger than the smooth trend: every energy step is the work of the force over it,
    # to rounding (an ulp of these ~2000 eV energies is 2e-13 eV)
    work = -0.5 * (forces[1:] + forces[:-1]) * step  # (60,)
    assert (energies.diff() - work).abs().max() <= 5e-12
    assert forces.diff().abs().max() <= 1e-5


@needs_atomistic
def test_isolated_atom_has_its_reference_energy() -> None:
    potential = make_potential()
    for z, ref in zip(ELEMENTS, potential.ref.tolist()):
        out = potential(
            torch.tensor([z], device="cpu"),
            torch.tensor([[3.0, 4.0, 5.0]], dtype=F64, device="cpu"),
            20.0 * torch.eye(3, dtype=F64, device="cpu"),
            stress=True,
        )
        assert abs(float(out["energy"][0]) - ref) <= 1e-12 * abs(ref)
        assert out["forces"].abs().max() == 0 and out["stress"].abs().max() == 0


# ------------------------------------------------------------------ fitted buffers, training
def test_fit_reference_recovers_known_energies() -> None:
    potential = make_potential()
    gen = torch.Generator().manual_seed(0)
    known = torch.tensor([-0.5, -7.25, 3.0, -42.0], dtype=F64, device="cpu")  # (K,)
    counts = torch.randint(0, 5, (12, len(ELEMENTS)), generator=gen, device="cpu")  # (G, K)
    counts[:, 0] += 1  # no structure without atoms
    tokens = torch.repeat_interleave(torch.arange(len(ELEMENTS), device="cpu").repeat(12), counts.flatten())  # (N,)
    graph_index = torch.repeat_interleave(torch.arange(12, device="cpu"), counts.sum(1))  # (N,)
    numbers = torch.tensor(ELEMENTS, device="cpu")[tokens]  # (N,)
    ref = potential.fit_reference(numbers, graph_index, counts.double() @ known)
    assert relative(ref, known) <= 1e-10
    assert torch.equal(potential.state_dict()["ref"], ref)

    # one element only: rank one, still solved (the per-atom mean)
    sizes = torch.tensor([1, 3, 2], device="cpu")
    single = potential.fit_reference(
        torch.full((6,), 8, device="cpu"), torch.repeat_interleave(torch.arange(3, device="cpu"), sizes), -2.5 * sizes.double()
    )
    assert relative(single, torch.tensor([0.0, 0.0, -2.5, 0.0], dtype=F64, device="cpu")) <= 1e-12


def test_fit_scale_is_the_rms_force_component() -> None:
    potential = make_potential()
    forces = torch.tensor([[3.0, 0.0, -4.0], [1.0, 1.0, 1.0]], dtype=F64, device="cpu")
    scale = potential.fit_scale(forces)
    assert math.isclose(float(scale), math.sqrt(28.0 / 6.0), rel_tol=1e-14)
    assert float(potential.state_dict()["scale"]) == float(scale)
    with pytest.raises(ValueError, match="zero"):
        potential.fit_scale(torch.zeros(4, 3, dtype=F64, device="cpu"))


@needs_atomistic
def test_forces_train_with_create_graph() -> None:
    potential = make_potential()
    numbers, positions, cell = triclinic()
    out = potential(numbers, positions, cell, stress=True, create_graph=True)
    loss = out["energy"].square().sum() + out["forces"].square().sum() + out["stress"].square().sum()
    loss.backward()
    grads = [p.grad for p in potential.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    detached = potential(numbers, positions, cell)  # without create_graph: inference outputs
    assert not detached["energy"].requires_grad and not detached["forces"].requires_grad
    energy_only = potential(numbers, positions, cell, forces=False)  # training on energies
    assert set(energy_only) == {"energy"} and energy_only["energy"].requires_grad
    assert torch.equal(energy_only["energy"].detach(), detached["energy"])


@needs_atomistic
def test_float32_runs_and_agrees() -> None:
    numbers, positions, cell = triclinic()
    out64 = make_potential()(numbers, positions, cell, stress=True)
    out32 = make_potential(torch.float32)(numbers, positions, cell, stress=True)  # inputs cast to float32
    assert out32["energy"].dtype == torch.float32
    for key in out64:
        assert relative(out32[key].double(), out64[key]) <= 1e-4, key


# ------------------------------------------------------------------ checkpoints
@needs_atomistic
def test_save_and_load_round_trip(tmp_path) -> None:
    potential = make_potential()
    numbers, positions, cell = triclinic()
    path = tmp_path / "model.pt"
    potential.save(path)
    assert os.listdir(tmp_path) == ["model.pt"]  # the temporary file was renamed, none left over
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "equiformer.potential/1" and payload["elements"] == list(ELEMENTS)
    assert payload["cutoff"] == CUTOFF and {"ref", "scale"} <= set(payload["state_dict"])
    loaded = Potential.load(path)
    assert loaded.elements == potential.elements and loaded.dtype == F64
    a = potential(numbers, positions, cell, stress=True)
    b = loaded(numbers, positions, cell, stress=True)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    potential.save(path)  # overwriting is atomic too
    assert os.listdir(tmp_path) == ["model.pt"]


def test_load_names_a_bad_file(tmp_path) -> None:
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="corrupt.pt"):
        Potential.load(corrupt)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3, device="cpu")}, other)
    with pytest.raises(ValueError, match="other.pt.*not an equiformer potential"):
        Potential.load(other)
    potential = make_potential()
    truncated = tmp_path / "truncated.pt"
    potential.save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated.pt"):
        Potential.load(truncated)


# ------------------------------------------------------------------ bad input
def test_constructor_refuses_a_k_nearest_graph_and_derived_keywords() -> None:
    with pytest.raises(ValueError, match="num_neighbors.*energy jump"):
        Potential(ELEMENTS, CUTOFF, num_neighbors=8)
    with pytest.raises(TypeError, match="num_tokens"):
        Potential(ELEMENTS, CUTOFF, num_tokens=4)
    with pytest.raises(TypeError, match="valid_radius"):
        Potential(ELEMENTS, CUTOFF, valid_radius=5.0)
    with pytest.raises(ValueError, match="repeated"):
        Potential([1, 1], CUTOFF)


def test_bad_structures_raise_clear_errors() -> None:
    potential = make_potential()
    numbers, positions, cell = triclinic()
    with pytest.raises(ValueError, match=r"atomic number\(s\) \[3, 92\].*knows \[1, 6, 8, 29\]"):
        potential(torch.tensor([6, 92, 3], device="cpu"), positions, cell)
    flat = cell.clone()
    flat[2] = flat[0] + flat[1]  # zero volume
    with pytest.raises(ValueError, match="singular"):
        potential(numbers, positions, flat)
    no_z = cell.clone()
    no_z[2] = 0.0
    with pytest.raises(ValueError, match="pbc is True on axis 2.*zero"):
        potential(numbers, positions, no_z, pbc=torch.tensor([True, True, True], device="cpu"))
    nan = positions.clone()
    nan[1, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        potential(numbers, nan, cell)
    with pytest.raises(ValueError, match="empty"):
        potential(numbers[:0], positions[:0])
    mol_numbers, mol_positions = molecule()
    with pytest.raises(ValueError, match="stress needs fully periodic"):
        potential(mol_numbers, mol_positions, stress=True)
    with pytest.raises(ValueError, match="stress needs fully periodic"):
        potential(numbers, positions, cell, pbc=torch.tensor([True, True, False], device="cpu"), stress=True)
