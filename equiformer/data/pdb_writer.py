"""Write backbones as PDB text, e.g. truth / noisy / denoised as three MODELs of one file.

Fixed-column records per the PDB format 3.3 (ATOM, TER, MODEL/ENDMDL, END) so PyMOL, ChimeraX,
VMD and gemmi read them; no dependency beyond numpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .backbone import BACKBONE_ATOMS, UNKNOWN_RESIDUE
from .pdb import THREE_TO_ONE

# the inverse of the reader's table (selenomethionine is written back as methionine)
ONE_TO_THREE: dict[str, str] = {one: three for three, one in THREE_TO_ONE.items() if three != "MSE"}
ONE_TO_THREE[UNKNOWN_RESIDUE] = "UNK"
_ELEMENTS = {"N": "N", "CA": "C", "C": "C", "O": "O"}


def backbone_to_pdb(
    coords,
    sequence: str,
    chain_id: str = "A",
    atom_mask=None,
    first_serial: int = 1,
    first_residue: int = 1,
) -> str:
    """ATOM records (and a closing TER) for one chain of backbone atoms.

    ``coords`` is (L, 4, 3) in Å, a numpy array or torch tensor (detached for you); atoms
    False in ``atom_mask`` (L, 4) are left out. Residues are numbered from ``first_residue``.

    Raises:
        ValueError: bad shapes, or a coordinate, residue number or atom serial that would not
            fit its fixed columns (the message names the argument and the allowed range).
    """
    xyz = _as_numpy(coords).astype(np.float64)
    length = len(sequence)
    if xyz.shape != (length, len(BACKBONE_ATOMS), 3):
        raise ValueError(f"coords must have shape (L, 4, 3) with L = {length}, got {xyz.shape}")
    present = np.ones(xyz.shape[:2], bool) if atom_mask is None else _as_numpy(atom_mask)
    if present.shape != xyz.shape[:2]:
        raise ValueError(f"atom_mask must have shape {xyz.shape[:2]}, got {present.shape}")
    present = present.astype(bool)
    if not np.isfinite(xyz[present]).all():
        raise ValueError("coords of present atoms must be finite to be written as PDB")
    # Check the text that will be written, not the value: -999.9996 passes "> -1000" but
    # rounds to "-1000.000", 9 characters, which shifts every later column.
    values = xyz[present].ravel()
    texts = [f"{value:8.3f}" for value in values]
    for value, text in zip(values, texts):
        if len(text) != 8:
            raise ValueError(
                f"coords value {float(value)!r} is written as {text.strip()!r}, which does not fit "
                "PDB's 8 columns: coordinates must round to -999.999..9999.999 Å"
            )
    if len(chain_id) != 1:
        raise ValueError(f"chain_id must be one character, got {chain_id!r}")
    last = first_residue + max(length - 1, 0)
    if first_residue < -999 or last > 9999:
        raise ValueError(
            f"residue numbers {first_residue}..{last} (first_residue={first_residue}, "
            f"{length} residues) do not fit PDB's 4 columns: they must lie in -999..9999"
        )
    last_serial = first_serial + len(values) // 3  # the TER record takes a serial too
    if first_serial < 1 or last_serial > 99999:
        raise ValueError(
            f"atom serials {first_serial}..{last_serial} (first_serial={first_serial}) do not "
            "fit PDB's 5 columns: they must lie in 1..99999"
        )
    lines = []
    serial = first_serial
    residue_name = "UNK"
    coordinate_text = iter(texts)
    for i, letter in enumerate(sequence):
        residue_name = ONE_TO_THREE.get(letter.upper(), "UNK")
        number = first_residue + i
        for j, atom in enumerate(BACKBONE_ATOMS):
            if present[i, j]:
                x, y, z = (next(coordinate_text) for _ in range(3))
                lines.append(
                    f"ATOM  {serial:5d} {_atom_field(atom)} {residue_name:>3s} {chain_id}"
                    f"{number:4d}    {x}{y}{z}{1.0:6.2f}{0.0:6.2f}"
                    f"          {_ELEMENTS[atom]:>2s}  "
                )
                serial += 1
    lines.append(f"TER   {serial:5d}      {residue_name:>3s} {chain_id}{last:4d}".ljust(80))
    return "\n".join(lines) + "\n"


def write_pdb(
    path: str | Path,
    models: dict,
    sequence: str,
    atom_mask=None,
    chain_id: str = "A",
) -> Path:
    """Write several coordinate sets of one chain as MODELs of one PDB file.

    ``models`` maps a name (e.g. "truth", "noisy", "denoised") to (L, 4, 3) coordinates;
    names go in REMARK records, in order, because PDB has no field for a model's name.
    Viewers show the models as states of one object, which makes them easy to compare.
    """
    if not models:
        raise ValueError("write_pdb needs at least one model")
    lines = [f"REMARK 999 MODEL {k:4d} {name}".ljust(80) for k, name in enumerate(models, 1)]
    for k, coords in enumerate(models.values(), 1):
        lines.append(f"MODEL     {k:4d}".ljust(80))
        lines.append(backbone_to_pdb(coords, sequence, chain_id, atom_mask).rstrip("\n"))
        lines.append("ENDMDL".ljust(80))
    lines.append("END".ljust(80))
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def _atom_field(name: str) -> str:
    """Columns 13-16: one-letter elements start in column 14 (" CA " is C-alpha, not Ca)."""
    return f" {name:<3s}" if len(name) < 4 else name


def _as_numpy(array) -> np.ndarray:
    if hasattr(array, "detach"):  # a torch tensor, possibly on GPU or requiring grad
        array = array.detach().cpu().numpy()
    return np.asarray(array)
