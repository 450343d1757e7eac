"""The one record every loader returns: a protein chain's backbone (N, CA, C, O).

Every source (PDB/mmCIF files, sidechainnet pickles, the embedded set) is reduced to this
shape so that splitting, batching and writing never care where a chain came from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BACKBONE_ATOMS: tuple[str, ...] = ("N", "CA", "C", "O")
"""Atom order of the second axis of ``Backbone.coords``."""

STANDARD_AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
AMINO_ACIDS = STANDARD_AMINO_ACIDS + "X"
"""The 20 standard residues (alphabetical one-letter codes) and ``X`` for anything else."""

UNKNOWN_RESIDUE = "X"

MAX_PEPTIDE_BOND = 2.0
"""C(i-1)-N(i) distance (Å) above which residue i starts a new segment; a real bond is 1.33 Å."""

_ATOM_N, _ATOM_C = BACKBONE_ATOMS.index("N"), BACKBONE_ATOMS.index("C")

_LOOKUP = np.full(128, len(AMINO_ACIDS) - 1, dtype=np.int64)
for _i, _aa in enumerate(AMINO_ACIDS):
    _LOOKUP[ord(_aa)] = _i


def residue_index(sequence: str) -> np.ndarray:
    """Map one-letter codes to indices into ``AMINO_ACIDS``; unknown letters become ``X``.

    Upper and lower case are treated alike so that sequences from any source agree.
    """
    codes = np.frombuffer(sequence.upper().encode("ascii", errors="replace"), dtype=np.uint8)
    return _LOOKUP[np.minimum(codes, 127)]


def chain_breaks(coords: np.ndarray, atom_mask: np.ndarray) -> np.ndarray:
    """Flag residues that start a new segment, judged by geometry, not residue numbering.

    Residue numbers lie (insertions, renumbered models, superposed variants), so a break is
    where C(i-1)-N(i) is longer than ``MAX_PEPTIDE_BOND`` or either atom is missing.
    """
    n_res = coords.shape[0]
    breaks = np.zeros(n_res, dtype=bool)
    if n_res < 2:
        return breaks
    previous_c, this_n = coords[:-1, _ATOM_C], coords[1:, _ATOM_N]
    both = atom_mask[:-1, _ATOM_C] & atom_mask[1:, _ATOM_N]
    dist = np.linalg.norm(previous_c.astype(np.float64) - this_n, axis=-1)
    breaks[1:] = ~both | ~(dist <= MAX_PEPTIDE_BOND)
    return breaks


@dataclass(eq=False)
class Backbone:
    """One protein chain's backbone atoms, the unit of every data-set in this package.

    Coordinates of atoms absent from ``atom_mask`` are set to zero so that two records of the
    same chain hold the same arrays whatever padding their source used (zeros, NaN). Records
    compare by identity (``eq=False``): comparing arrays with ``==`` has no single answer.
    """

    id: str
    entry: str
    sequence: str
    coords: np.ndarray
    atom_mask: np.ndarray
    chain_break: np.ndarray

    def __post_init__(self) -> None:
        if not isinstance(self.sequence, str):
            raise TypeError(f"Backbone.sequence must be a str, got {type(self.sequence).__name__}")
        length = len(self.sequence)
        self.coords = _checked(self.coords, "coords", (length, 4, 3), np.float32)
        self.atom_mask = _checked(self.atom_mask, "atom_mask", (length, 4), bool)
        self.chain_break = _checked(self.chain_break, "chain_break", (length,), bool)
        if length and self.chain_break[0]:
            raise ValueError(f"Backbone {self.id!r}: chain_break[0] must be False")
        self.coords[~self.atom_mask] = 0.0
        if not np.isfinite(self.coords).all():
            raise ValueError(f"Backbone {self.id!r}: coords of present atoms must be finite")

    @classmethod
    def from_atoms(
        cls, id: str, entry: str, sequence: str, coords: np.ndarray, atom_mask: np.ndarray
    ) -> "Backbone":
        """Build a record and derive ``chain_break`` from the geometry."""
        coords = np.asarray(coords, dtype=np.float32)
        atom_mask = np.asarray(atom_mask, dtype=bool)
        if coords.ndim == 3 and coords.shape[:2] == atom_mask.shape:
            coords = np.where(atom_mask[..., None], coords, np.float32(0.0))
            breaks = chain_breaks(coords, atom_mask)
        else:  # let __post_init__ name the shape error
            breaks = np.zeros(len(sequence), dtype=bool)
        return cls(id, entry, sequence, coords, atom_mask, breaks)

    def __len__(self) -> int:
        return len(self.sequence)

    def __repr__(self) -> str:
        return (
            f"Backbone(id={self.id!r}, entry={self.entry!r}, residues={len(self)}, "
            f"breaks={int(self.chain_break.sum())})"
        )

    @property
    def num_resolved(self) -> int:
        """Residues with a CA atom: the count that length filters use."""
        return int(self.atom_mask[:, BACKBONE_ATOMS.index("CA")].sum())


def _checked(value: np.ndarray, field: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    array = np.array(value, dtype=dtype, copy=True)
    if array.shape != shape:
        expected = "(" + ", ".join(["L", *(str(s) for s in shape[1:])]) + ")"
        raise ValueError(
            f"Backbone.{field} must have shape {expected} with L = len(sequence) = {shape[0]}, "
            f"got {array.shape}"
        )
    return array
