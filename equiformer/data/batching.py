"""Turn backbones into padded model inputs: one token per backbone atom.

A chain of L residues becomes n = 4 L atoms in the order N, CA, C, O of residue 0, then of
residue 1, ...; each atom's token says both which residue and which atom it is, and the
covalent bonds between them form ``adj_mat``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from .backbone import AMINO_ACIDS, BACKBONE_ATOMS, Backbone, residue_index

ATOMS_PER_RESIDUE = len(BACKBONE_ATOMS)
NUM_BACKBONE_TOKENS = len(AMINO_ACIDS) * ATOMS_PER_RESIDUE
"""Vocabulary size of ``BackboneBatch.tokens``: 21 residue types x 4 atoms = 84."""

_N, _CA, _C, _O = (BACKBONE_ATOMS.index(a) for a in ("N", "CA", "C", "O"))
_INTRA_BONDS = ((_N, _CA), (_CA, _C), (_C, _O))


@dataclass
class BackboneBatch:
    """Padded tensors for a batch of b chains of at most L residues (n = 4 L atoms).

    tokens: (b, n) int64, ``residue_index * 4 + atom_index`` (also for atoms missing from
        the structure: the residue type is still known); 0 at padding.
    coords: (b, n, 3) float32 in Å; 0 where ``mask`` is False.
    mask: (b, n) bool, the atom exists (present in the structure and not padding).
    adj_mat: (b, n, n) bool, covalent backbone bonds: N-CA, CA-C, C=O within a residue and
        the peptide bond C(i)-N(i+1) unless residue i+1 starts a new segment. Symmetric, no
        self loops, only between atoms in ``mask``.
    residue_mask: (b, L) bool, the residue is part of the (cropped) chain, not padding.
    """

    tokens: torch.Tensor
    coords: torch.Tensor
    mask: torch.Tensor
    adj_mat: torch.Tensor
    residue_mask: torch.Tensor

    def to(self, device: torch.device | str) -> "BackboneBatch":
        """The same batch on another device."""
        return BackboneBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def crop_window(
    length: int, max_residues: int, generator: torch.Generator | None, present: np.ndarray | None = None
) -> slice:
    """A uniformly random window of ``max_residues`` residues, or the whole chain if shorter.

    ``present``: (length,) bool, the residue has at least one atom.  Windows holding none are
    never drawn (a long unresolved tail would otherwise give crops with nothing to denoise or
    score); the draw is uniform over the other windows, the same draw as without ``present``
    when every window holds an atom."""
    if length <= max_residues:
        return slice(0, length)
    starts = length - max_residues + 1
    if present is None:
        valid = None
    else:
        present = np.asarray(present, dtype=bool)
        if present.shape != (length,) or not present.any():
            raise ValueError(f"present must be a (length,) bool array with a True, got shape {present.shape}")
        counts = np.concatenate([[0], np.cumsum(present)])
        valid = np.flatnonzero(counts[max_residues:] - counts[:starts] > 0)  # windows with an atom
    pick = int(torch.randint(0, starts if valid is None else len(valid), (1,), generator=generator, device="cpu"))
    start = pick if valid is None else int(valid[pick])
    return slice(start, start + max_residues)


def collate(
    backbones: list[Backbone],
    max_residues: int,
    generator: torch.Generator | None = None,
) -> BackboneBatch:
    """Crop each chain to a random window of at most ``max_residues`` and pad to a batch.

    Crops are drawn from ``generator`` (torch's global generator when None), so a seeded
    generator gives the same batch every time. The batch is padded to its longest crop.
    """
    if not backbones:
        raise ValueError("collate needs at least one backbone")
    if max_residues < 1:
        raise ValueError(f"max_residues must be >= 1, got {max_residues}")
    windows = [crop_window(len(b), max_residues, generator, b.atom_mask.any(1)) for b in backbones]
    size = max(w.stop - w.start for w in windows)
    shape = (len(backbones), size)
    residues = np.zeros(shape, dtype=np.int64)
    coords = np.zeros((*shape, ATOMS_PER_RESIDUE, 3), dtype=np.float32)
    atom_mask = np.zeros((*shape, ATOMS_PER_RESIDUE), dtype=bool)
    starts_segment = np.zeros(shape, dtype=bool)
    residue_mask = np.zeros(shape, dtype=bool)
    for i, (backbone, window) in enumerate(zip(backbones, windows)):
        count = window.stop - window.start
        residues[i, :count] = residue_index(backbone.sequence[window])
        coords[i, :count] = backbone.coords[window]
        atom_mask[i, :count] = backbone.atom_mask[window]
        starts_segment[i, :count] = backbone.chain_break[window]
        residue_mask[i, :count] = True
    tokens = residues[..., None] * ATOMS_PER_RESIDUE + np.arange(ATOMS_PER_RESIDUE)
    tokens = np.where(residue_mask[..., None], tokens, 0)
    return BackboneBatch(
        tokens=torch.from_numpy(tokens.reshape(len(backbones), -1)),
        coords=torch.from_numpy(coords.reshape(len(backbones), -1, 3)),
        mask=torch.from_numpy(atom_mask.reshape(len(backbones), -1)),
        adj_mat=torch.from_numpy(_bonds(atom_mask, starts_segment)),
        residue_mask=torch.from_numpy(residue_mask),
    )


def _bonds(atom_mask: np.ndarray, starts_segment: np.ndarray) -> np.ndarray:
    """Dense (b, n, n) bond matrix from per-residue atom presence and segment starts."""
    batch, size, _ = atom_mask.shape
    n = size * ATOMS_PER_RESIDUE
    adj = np.zeros((batch, n, n), dtype=bool)
    first_atom = np.arange(size) * ATOMS_PER_RESIDUE
    for a, b in _INTRA_BONDS:
        adj[:, first_atom + a, first_atom + b] = atom_mask[..., a] & atom_mask[..., b]
    peptide = atom_mask[:, :-1, _C] & atom_mask[:, 1:, _N] & ~starts_segment[:, 1:]
    adj[:, first_atom[:-1] + _C, first_atom[1:] + _N] = peptide
    return adj | adj.transpose(0, 2, 1)
