"""Read backbones from a local SidechainNet pickle, without the sidechainnet package.

The file layout, as documented by jonathanking/sidechainnet (README.md "Summary of
SidechainNet data", version1_notes.md, and dataloaders/SCNDataset.py):

* the pickle is a dict of splits ("train", "valid-10" ... "valid-90", "test") plus
  "settings", "description", "date"; each split is a dict of per-protein lists:
  "seq" (one-letter string), "ids" ("1ABC_1_A" = entry_model_chain; validation ids carry a
  "<n>#" prefix), "msk" ("+"/"-" per residue: resolved or missing), "crd", "ang", "evo" ...;
* 0.7.x: each "crd" item is an (L*14, 3) array, 14 atom slots per residue, zero-padded;
* 1.0.x: 15 slots per residue, shaped (L, 15, 3), padded with NaN; settings' "thinning" is
  now "casp_thinning". SCNDataset 1.0 still reads the split key "crd"; "coords" (the name of
  the 1.0 batch attribute) is accepted too.
* in both, a residue's first four slots are the backbone atoms N, CA, C, O (README: backbone
  coordinates are "crd, subset [0:4]"; build_info.py: BACKBONE_ATOMS = ['N', 'CA', 'C', 'O']).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Iterable

import numpy as np

from .backbone import BACKBONE_ATOMS, Backbone

COORD_KEYS = ("crd", "coords")
_ENTRY_ID = re.compile(r"([0-9][A-Za-z0-9]{3})_")


def load_sidechainnet(
    path: str | Path, splits: Iterable[str] | None = ("train",), min_residues: int = 8
) -> list[Backbone]:
    """Backbones of the chosen splits of a SidechainNet pickle (0.7.x or 1.0.x layout).

    ``splits=None`` reads every split. Residues marked "-" in "msk", or whose backbone atoms
    are padding (all-zero in 0.7, NaN in 1.0), are masked; chain breaks come from the C-N
    distance. Chains with fewer than ``min_residues`` CA atoms are left out.

    Security: this unpickles the file, and unpickling can run arbitrary code. Pass only a file
    you trust (one you downloaded from SidechainNet or made yourself); nothing is downloaded.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a readable SidechainNet pickle; the message names the path
            and the missing split or key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No SidechainNet file at {path}")
    data = _unpickle(path)
    names = _split_names(path, data, splits)
    backbones = []
    for name in names:
        for backbone in _read_split(path, name, data[name]):
            if backbone.num_resolved >= min_residues:
                backbones.append(backbone)
    return backbones


def entry_from_id(protein_id: str) -> str:
    """PDB entry of a SidechainNet/ProteinNet id: "1ABC_1_A" and "30#1ABC_1_A" -> "1abc".

    Ids that name no PDB entry (CASP targets such as "T0865") are returned unchanged.
    """
    core = protein_id.rsplit("#", 1)[-1]
    match = _ENTRY_ID.match(core)
    return match.group(1).lower() if match else core


def _unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as handle:
            data = pickle.load(handle)
    except Exception as error:  # pickle raises almost anything on a foreign file
        raise ValueError(
            f"{path} is not a readable SidechainNet pickle: {type(error).__name__}: {error}"
        ) from error
    if not isinstance(data, dict):
        raise ValueError(
            f"{path} is not a SidechainNet pickle: expected a dict of splits "
            f"(keys like 'train', 'valid-10', 'test'), got {type(data).__name__}"
        )
    return data


def _split_names(path: Path, data: dict, splits: Iterable[str] | None) -> list[str]:
    available = [k for k, v in data.items() if isinstance(v, dict) and "seq" in v]
    if splits is None:
        if not available:
            raise ValueError(f"{path} has no SidechainNet split (a dict with key 'seq')")
        return available
    names = [splits] if isinstance(splits, str) else list(splits)
    for name in names:
        if name not in data:
            raise ValueError(
                f"{path} has no split {name!r} (missing key); its splits are {available}"
            )
    return names


def _read_split(path: Path, split: str, columns: dict) -> list[Backbone]:
    if not isinstance(columns, dict):
        raise ValueError(f"{path}: split {split!r} is a {type(columns).__name__}, not a dict")
    coord_key = next((k for k in COORD_KEYS if k in columns), None)
    for key in ("seq", "ids", coord_key):
        if key is None or key not in columns:
            missing = " or ".join(COORD_KEYS) if key is None else key
            raise ValueError(f"{path}: split {split!r} has no key {missing!r}")
    sequences, ids, coords = columns["seq"], columns["ids"], columns[coord_key]
    masks = columns.get("msk")
    if masks is None:
        masks = [None] * len(sequences)
    if not len(sequences) == len(ids) == len(coords) == len(masks):
        raise ValueError(f"{path}: split {split!r} has lists of different lengths")
    return [
        _backbone(path, str(pid), _as_str(seq), crd, msk)
        for seq, pid, crd, msk in zip(sequences, ids, coords, masks)
    ]


def _as_str(sequence) -> str:
    return sequence if isinstance(sequence, str) else "".join(sequence)


def _resolved(path: Path, protein_id: str, msk) -> np.ndarray:
    """The mask as booleans: "+"/"-" strings in every release (also as a list or array of
    characters, where ``np.array(..., dtype=bool)`` would make every non-empty one True);
    a 0/1 or boolean array is accepted as well."""
    if isinstance(msk, np.ndarray) and msk.ndim == 0:
        msk = msk.item()  # np.array("++-") holds one string
    if isinstance(msk, bytes):
        msk = msk.decode("ascii", errors="replace")
    values = np.asarray(list(msk) if isinstance(msk, str) else msk)
    if values.dtype.kind in "USO":
        chars = [v.decode("ascii", errors="replace") if isinstance(v, bytes) else str(v)
                 for v in values.ravel()]
        unknown = sorted(set(chars) - {"+", "-"})
        if unknown:
            raise ValueError(
                f"{path}: protein {protein_id!r} has a mask 'msk' with {unknown[:5]}, expected "
                "'+' (resolved) or '-' (missing) per residue"
            )
        return np.array([c == "+" for c in chars], dtype=bool).reshape(values.shape)
    if values.dtype.kind not in "biuf" or not np.isin(values, (0, 1)).all():
        raise ValueError(
            f"{path}: protein {protein_id!r} has a mask 'msk' that is neither '+'/'-' "
            "characters nor 0/1 values"
        )
    return values.astype(bool)


def _backbone(path: Path, protein_id: str, sequence: str, crd, msk) -> Backbone:
    length = len(sequence)
    array = np.asarray(crd, dtype=np.float64)
    atoms = len(BACKBONE_ATOMS)
    if array.ndim == 2 and length and array.shape[0] % length == 0:
        array = array.reshape(length, -1, 3)  # 0.7.x: (L * 14, 3)
    if array.ndim != 3 or array.shape[0] != length or array.shape[1] < atoms:
        raise ValueError(
            f"{path}: protein {protein_id!r} has coordinates of shape {np.shape(crd)}, expected "
            f"(L*14, 3) or (L, 15, 3) with L = len(seq) = {length}"
        )
    backbone = array[:, :atoms]
    present = ~np.isnan(backbone).any(axis=-1) & (backbone != 0.0).any(axis=-1)
    if msk is not None:
        resolved = _resolved(path, protein_id, msk)
        if resolved.shape != (length,):
            raise ValueError(
                f"{path}: protein {protein_id!r} has a mask 'msk' of {resolved.size} residues, "
                f"expected len(seq) = {length}"
            )
        present &= resolved[:, None]
    backbone = np.where(present[..., None], backbone, 0.0)
    return Backbone.from_atoms(protein_id, entry_from_id(protein_id), sequence, backbone, present)
