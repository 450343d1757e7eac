"""Labelled structures for training a ``Potential``: extended XYZ frames read with ASE, checked,
and packed atom after atom into tensors (no padding), so that any subset of structures is one
``Potential.forward`` batch.

Labels are what ``ase.io.read`` puts on each frame's calculator: ``energy`` (eV) and ``forces``
(eV/Å), both required, and ``stress`` (eV/Å^3, ASE's sign: positive under tension), optional.
``Potential`` computes stresses of fully periodic structures only, so a stress label is used
where the frame is periodic on all three axes; if any frame has one, every fully periodic frame
must (the others, slabs and molecules, may have one or not: it is ignored).

Every problem with a file is a ``DataError``: one line naming the file and the frame (counted
from 0, as ASE's ``index``).
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from ..training.config import SetupError
from .neighbors import check_structure

if TYPE_CHECKING:
    from ase import Atoms

__all__ = ["DataError", "Structures", "check_elements", "read_structures", "split_frames"]


class DataError(SetupError):
    """A data file that cannot be trained on; the message names the file and the frame."""


@dataclass(frozen=True)
class Structures:
    """G structures with N atoms in all, packed: structure g owns atoms ``offsets[g]:offsets[g+1]``.

    Floats are float64 on the CPU as read; ``to`` makes a batch's copy for the device and dtype
    of the model.  ``stress`` is None when the data set has no stress labels; otherwise it is
    zero where ``has_stress`` is False (structures that are not fully periodic).
    """

    numbers: Tensor  # (N,) long atomic numbers
    positions: Tensor  # (N, 3) Å
    cell: Tensor  # (G, 3, 3) lattice vectors as rows; zeros where a frame has none
    pbc: Tensor  # (G, 3) bool
    energy: Tensor  # (G,) eV
    forces: Tensor  # (N, 3) eV/Å
    stress: Tensor | None  # (G, 3, 3) eV/Å^3, or None: no stress labels
    has_stress: Tensor  # (G,) bool: the stress label is used (labelled and fully periodic)
    sizes: Tensor  # (G,) long atoms per structure
    frames: Tensor  # (G,) long frame index in ``source`` (for messages)
    source: str  # the file the frames came from

    def __len__(self) -> int:
        return int(self.sizes.shape[0])

    @property
    def offsets(self) -> Tensor:
        """``(G + 1,)`` first atom of every structure, then N."""
        return torch.cat([self.sizes.new_zeros(1), self.sizes.cumsum(0)])

    @property
    def graph_index(self) -> Tensor:
        """``(N,)`` structure id of every atom."""
        return torch.repeat_interleave(torch.arange(len(self), device=self.sizes.device), self.sizes)

    @property
    def elements(self) -> tuple[int, ...]:
        """The atomic numbers present, ascending."""
        return tuple(torch.unique(self.numbers).tolist())

    def atom_index(self, indices: Sequence[int]) -> Tensor:
        """``(n,)`` rows of the atoms of structures ``indices``, structure after structure."""
        offsets = self.offsets.tolist()
        if not indices:
            return torch.zeros(0, dtype=torch.long)
        return torch.cat([torch.arange(offsets[g], offsets[g + 1]) for g in indices])

    def select(self, indices: Sequence[int]) -> Structures:
        """Structures ``indices`` (in that order, repeats allowed) packed as a set of their own."""
        rows = torch.as_tensor(list(indices), dtype=torch.long)  # (g,)
        atoms = self.atom_index(list(indices))  # (n,)
        return Structures(
            numbers=self.numbers[atoms], positions=self.positions[atoms], cell=self.cell[rows],
            pbc=self.pbc[rows], energy=self.energy[rows], forces=self.forces[atoms],
            stress=None if self.stress is None else self.stress[rows], has_stress=self.has_stress[rows],
            sizes=self.sizes[rows], frames=self.frames[rows], source=self.source,
        )

    def to(self, device: torch.device, dtype: torch.dtype) -> Structures:
        """A copy on ``device`` with floating tensors in ``dtype``."""
        def move(x: Tensor | None) -> Tensor | None:
            if x is None:
                return None
            return x.to(device=device, dtype=dtype if x.is_floating_point() else x.dtype)

        moved = {f.name: move(getattr(self, f.name)) for f in fields(self) if f.name != "source"}
        return replace(self, **moved)

    def fingerprint(self) -> str:
        """A short digest of every tensor, to notice changed data on ``--resume``."""
        digest = hashlib.sha256()
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                digest.update(f.name.encode())
                digest.update(value.contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]


def read_structures(path: str | os.PathLike[str]) -> Structures:
    """Every frame of the extended XYZ file ``path`` (``ase.io.read(path, ":")``), checked and packed."""
    import ase.io

    source = os.fspath(path)
    if not Path(source).is_file():
        raise DataError(f"{source}: no such file")
    try:
        frames = ase.io.read(source, ":")
    except Exception as error:  # ASE's parsers raise many types; an empty file is one of them
        if Path(source).stat().st_size == 0:
            raise DataError(f"{source}: the file is empty (no frames)") from error
        detail = " ".join(str(error).split())[:300]
        raise DataError(f"{source}: cannot read it as extended XYZ ({type(error).__name__}: {detail})") from error
    if not frames:
        raise DataError(f"{source}: the file has no frames")

    labels = [_labels(atoms, source, k) for k, atoms in enumerate(frames)]
    periodic = [bool(atoms.pbc.all()) for atoms in frames]
    stressed = [k for k, (_, _, stress) in enumerate(labels) if stress is not None]
    if stressed:
        missing = [k for k, (_, _, stress) in enumerate(labels) if stress is None and periodic[k]]
        if missing:
            raise DataError(
                f"{source}: frame {missing[0]}: periodic but no stress label, while frame "
                f"{stressed[0]} has one (label the stress of every periodic frame, or of none)"
            )
    sizes = torch.tensor([len(atoms) for atoms in frames], dtype=torch.long)  # (G,)
    has_stress = torch.tensor([periodic[k] and labels[k][2] is not None for k in range(len(frames))])  # (G,)
    stress = None
    if stressed:
        stress = torch.from_numpy(np.stack([
            s if s is not None and periodic[k] else np.zeros((3, 3)) for k, (_, _, s) in enumerate(labels)
        ]))  # (G, 3, 3)
    return Structures(
        numbers=torch.from_numpy(np.concatenate([atoms.numbers for atoms in frames])).long(),
        positions=torch.from_numpy(np.concatenate([atoms.positions for atoms in frames])),
        cell=torch.from_numpy(np.stack([atoms.cell.array for atoms in frames])),
        pbc=torch.from_numpy(np.stack([atoms.pbc for atoms in frames])),
        energy=torch.tensor([energy for energy, _, _ in labels], dtype=torch.float64),
        forces=torch.from_numpy(np.concatenate([forces for _, forces, _ in labels])),
        stress=stress, has_stress=has_stress, sizes=sizes,
        frames=torch.arange(len(frames)), source=source,
    )


def _labels(atoms: Atoms, source: str, k: int) -> tuple[float, np.ndarray, np.ndarray | None]:
    """Frame ``k``'s energy, forces ``(n, 3)`` and stress ``(3, 3)`` or None, all float64 and finite."""
    from ase.stress import voigt_6_to_full_3x3_stress

    where = f"{source}: frame {k}"
    results = atoms.calc.results if atoms.calc is not None else {}
    for name in ("energy", "forces"):
        if results.get(name) is None:
            raise DataError(f"{where}: no {name} label (every frame needs energy and forces)")
    energy = float(np.asarray(results["energy"], dtype=np.float64).reshape(()))
    forces = np.asarray(results["forces"], dtype=np.float64)
    if forces.shape != (len(atoms), 3):
        raise DataError(f"{where}: forces have shape {forces.shape}, expected ({len(atoms)}, 3)")
    stress = results.get("stress")
    if stress is not None:
        stress = np.asarray(stress, dtype=np.float64)
        if stress.shape == (6,):
            stress = voigt_6_to_full_3x3_stress(stress)
        if stress.shape != (3, 3):
            raise DataError(f"{where}: stress has shape {stress.shape}, expected (6,) or (3, 3)")
    values = {"energy": np.array(energy), "forces": forces, "positions": atoms.positions,
              "cell": atoms.cell.array, "stress": stress}
    for name, value in values.items():
        if value is not None and not np.isfinite(value).all():
            raise DataError(f"{where}: its {name} hold NaN or inf")
    try:  # the checks Potential.forward would make, now, with the frame named
        check_structure(torch.from_numpy(atoms.numbers).long(), torch.from_numpy(atoms.positions),
                        torch.from_numpy(atoms.cell.array), torch.from_numpy(atoms.pbc))
    except ValueError as error:
        raise DataError(f"{where}: {error}") from error
    return energy, forces, stress


def split_frames(structures: Structures, fraction: float, seed: int) -> tuple[Structures, Structures]:
    """Training and validation structures: a seeded random ``fraction`` of the frames (at least
    one) held out, each part in file order."""
    count = len(structures)
    held_out = max(1, round(fraction * count))
    if count - held_out < 1:
        raise DataError(
            f"{structures.source}: {count} frame(s) cannot be split into training and validation "
            "(give --valid FILE, or more frames)"
        )
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    return structures.select(sorted(order[held_out:])), structures.select(sorted(order[:held_out]))


def check_elements(structures: Structures, known: Sequence[int], training: str) -> None:
    """``DataError`` naming the first frame with an element outside ``known`` (the training set's,
    read from ``training``): the potential would have no embedding for it."""
    from ase.data import chemical_symbols

    unknown = ~torch.isin(structures.numbers, torch.as_tensor(list(known), dtype=torch.long))  # (N,)
    if not bool(unknown.any()):
        return
    atom = int(unknown.nonzero()[0])
    g = int(torch.searchsorted(structures.offsets, atom, right=True)) - 1
    z = int(structures.numbers[atom])
    names = ", ".join(chemical_symbols[e] for e in known)
    held_out = " (held out for validation)" if structures.source == training else ""
    raise DataError(
        f"{structures.source}: frame {int(structures.frames[g])}{held_out}: element "
        f"{chemical_symbols[z]} (Z={z}) is not in the training data ({training}: {names})"
    )
