"""The default training set shipped inside the package: real backbones, no download needed.

Storage format of ``backbones.npz`` (written by ``build_embedded.py``, read here):

* ``ids``, ``entries`` (unicode arrays), ``lengths`` (int32, residues per chain) and
  ``sequences`` (uint8, all one-letter codes concatenated) describe the chains;
* ``atom_mask`` (bool, total residues x 4) says which of N, CA, C, O exist;
* ``coord_delta_bytes`` (uint8, 4 x 3 x atoms) holds coordinates rounded to 0.001 Å as int32
  milli-Å, stored as differences between consecutive atoms (a missing atom repeats the one
  before it) and split into little-endian byte planes: bonded atoms are 1-3 Å apart, so the
  two high planes are almost constant and the file compresses to about 60 % of plain int32.

Nothing is lost: decoding gives back exactly the rounded coordinates.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from .backbone import Backbone

EMBEDDED_FILE = "backbones.npz"
FORMAT_VERSION = 1
_MILLI = 1000.0


def load_embedded() -> list[Backbone]:
    """The embedded backbones (see ``SOURCES.txt``), read from the installed package."""
    with resources.files(__package__).joinpath(EMBEDDED_FILE).open("rb") as handle:
        with np.load(handle, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    return unpack_backbones(arrays)


def pack_backbones(backbones: list[Backbone]) -> dict[str, np.ndarray]:
    """Arrays for ``np.savez_compressed``; the inverse of ``unpack_backbones``."""
    flat_coords = []
    for backbone in backbones:
        milli = np.round(backbone.coords.astype(np.float64) * _MILLI).astype(np.int64)
        milli = milli.reshape(-1, 3)
        present = backbone.atom_mask.reshape(-1)
        last_present = np.maximum.accumulate(np.where(present, np.arange(present.size), 0))
        flat_coords.append(milli[last_present])
    coords = np.concatenate(flat_coords) if flat_coords else np.zeros((0, 3), np.int64)
    delta = np.diff(coords, axis=0, prepend=np.zeros((1, 3), np.int64))
    if np.abs(delta).max(initial=0) >= 2**31:
        raise ValueError("coordinates too far apart for int32 milli-Å deltas")
    planes = delta.T.astype("<i4").copy().view(np.uint8).reshape(3, -1, 4).transpose(2, 0, 1)
    sequence = "".join(b.sequence for b in backbones)
    return {
        "format_version": np.array(FORMAT_VERSION, dtype=np.int32),
        "ids": np.array([b.id for b in backbones], dtype=str),
        "entries": np.array([b.entry for b in backbones], dtype=str),
        "lengths": np.array([len(b) for b in backbones], dtype=np.int32),
        "sequences": np.frombuffer(sequence.encode("ascii"), dtype=np.uint8),
        "atom_mask": np.concatenate([b.atom_mask for b in backbones]).astype(bool),
        "coord_delta_bytes": np.ascontiguousarray(planes),
    }


def unpack_backbones(arrays: dict[str, np.ndarray]) -> list[Backbone]:
    """Rebuild ``Backbone`` records from ``pack_backbones`` arrays."""
    version = int(arrays["format_version"])
    if version != FORMAT_VERSION:
        raise ValueError(f"embedded set has format {version}, this code reads {FORMAT_VERSION}")
    planes = arrays["coord_delta_bytes"]
    delta = np.ascontiguousarray(planes.transpose(1, 2, 0)).view("<i4").reshape(3, -1).T
    coords = (np.cumsum(delta, axis=0, dtype=np.int64) / _MILLI).astype(np.float32)
    coords = coords.reshape(-1, 4, 3)
    mask = arrays["atom_mask"]
    sequences = arrays["sequences"].tobytes().decode("ascii")
    ends = np.cumsum(arrays["lengths"])
    starts = ends - arrays["lengths"]
    return [
        Backbone.from_atoms(str(id_), str(entry), sequences[s:e], coords[s:e], mask[s:e])
        for id_, entry, s, e in zip(arrays["ids"], arrays["entries"], starts, ends)
    ]
