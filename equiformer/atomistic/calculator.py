"""An ASE calculator around a ``Potential``: energy, forces and stress for MD, relaxation and
cell filters.  Importing this module needs ase; ``equiformer.atomistic`` imports it on first use
of ``EquiformerCalculator`` so that the package itself works without ase."""
from __future__ import annotations

import copy
import os
from typing import Any, ClassVar

import numpy as np
import torch

from .potential import Potential

try:
    from ase import Atoms
    from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
except ImportError as exc:  # optional dependency: say how to get it
    raise ImportError('EquiformerCalculator needs ase, which is not installed: pip install "equiformer[atomistic]"') from exc

__all__ = ["EquiformerCalculator"]

# ASE's Voigt order xx, yy, zz, yz, xz, xy as indices into a flattened 3x3 tensor.
_VOIGT = [0, 4, 8, 5, 2, 1]


class EquiformerCalculator(Calculator):
    """ASE calculator for a ``Potential``, or the path of a checkpoint written by ``Potential.save``.

    ``device`` and ``dtype`` are where and in what precision it runs (float64 by default: MD and
    finite differences want it).  A given potential is used as is when it already has them, else
    a converted copy is made (the caller's module is left unchanged).  Other keywords go to ASE's
    ``Calculator`` (``label``, ``directory``...).  Forces are computed with every energy (one
    backward pass, and ASE asks for both); the stress only when asked for, on fully periodic cells.
    """

    implemented_properties: ClassVar[list[str]] = ["energy", "free_energy", "forces", "stress"]

    def __init__(
        self,
        model: Potential | str | os.PathLike,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if isinstance(model, (str, os.PathLike)):
            model = Potential.load(model, map_location=device)
        elif not isinstance(model, Potential):
            raise TypeError(f"model must be a Potential or a checkpoint path, got {type(model).__name__}")
        device = torch.device(device)
        if model.dtype != dtype or model.device != device:
            model = copy.deepcopy(model)  # .to() converts in place: leave the caller's module be
        # no .eval(): the network has no train-mode behaviour, and the module may be shared
        self.potential = model.to(device=device, dtype=dtype)

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        properties = ["energy"] if properties is None else properties
        super().calculate(atoms, properties, system_changes)  # sets self.atoms to a copy
        atoms = self.atoms
        stress = "stress" in properties
        if stress and not atoms.pbc.all():
            raise PropertyNotImplementedError(
                f"stress needs a fully periodic cell, got pbc {atoms.pbc.tolist()}"
            )
        potential = self.potential
        device, dtype = potential.device, potential.dtype
        numbers = torch.as_tensor(atoms.numbers, dtype=torch.long, device=device)  # (N,)
        positions = torch.as_tensor(atoms.positions, dtype=dtype, device=device)  # (N, 3)
        cell = torch.as_tensor(atoms.cell.array, dtype=dtype, device=device)  # (3, 3)
        pbc = torch.as_tensor(atoms.pbc, dtype=torch.bool, device=device)  # (3,)
        out = potential(numbers, positions, cell, pbc, forces=True, stress=stress)
        energy = float(out["energy"][0])
        self.results = {
            "energy": energy,
            "free_energy": energy,  # no electronic entropy in a potential
            "forces": out["forces"].detach().to("cpu", torch.float64).numpy(),  # (N, 3)
        }
        if stress:
            full = out["stress"][0].detach().to("cpu", torch.float64).numpy()  # (3, 3)
            self.results["stress"] = np.ascontiguousarray(full.reshape(9)[_VOIGT])  # (6,)
