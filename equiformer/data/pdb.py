"""Read protein backbones from PDB and mmCIF files (plain or gzipped) with gemmi.

gemmi is an optional dependency (``pip install "equiformer[denoise]"``), imported only when a
file is actually read, so ``import equiformer.data`` stays light.
"""

from __future__ import annotations

import gzip
import re
import warnings
import zlib
from pathlib import Path
from typing import Literal

import numpy as np

from .backbone import BACKBONE_ATOMS, UNKNOWN_RESIDUE, Backbone

STRUCTURE_SUFFIXES: tuple[str, ...] = (".pdb", ".ent", ".cif", ".mmcif")
"""File endings recognised as structures, each optionally followed by ``.gz``."""

THREE_TO_ONE: dict[str, str] = {
    "ALA": "A", "ARG": "R", "ASN": "N", "ASP": "D", "CYS": "C",
    "GLN": "Q", "GLU": "E", "GLY": "G", "HIS": "H", "ILE": "I",
    "LEU": "L", "LYS": "K", "MET": "M", "PHE": "F", "PRO": "P",
    "SER": "S", "THR": "T", "TRP": "W", "TYR": "Y", "VAL": "V",
    "MSE": "M",  # selenomethionine: crystallographers' stand-in for methionine
}  # fmt: skip

_PDB_ID = re.compile(r"[1-9][a-z0-9]{3}")
# "1abc", "pdb1abc", "1abc_A", "1abcA", "1abc-B1" and SCOP/ASTRAL domain names "d1abca_".
_STEM_PATTERNS = (
    re.compile(r"(?:pdb)?([1-9][a-z0-9]{3})(?:[_\-.]?[a-z0-9]{1,4})?"),
    re.compile(r"d([1-9][a-z0-9]{3})[a-z0-9_.][a-z0-9_]"),
)


def _import_gemmi():
    try:
        import gemmi
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            'Reading PDB/mmCIF files needs gemmi: pip install "equiformer[denoise]"'
        ) from error
    return gemmi


def is_structure_file(path: str | Path) -> bool:
    """True for names ending in a recognised structure suffix, optionally gzipped."""
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return name.endswith(STRUCTURE_SUFFIXES)


def structure_stem(path: str | Path) -> str:
    """File name without its structure and ``.gz`` suffixes: ``1abc_A.pdb.gz`` -> ``1abc_A``."""
    name = Path(path).name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    return name.rsplit(".", 1)[0] if "." in name else name


def guess_entry(stem: str, header_id: str = "") -> str:
    """The PDB entry a file holds, so that splits keep all chains of one entry together.

    Trust the header's ID code when it looks like a PDB id, then the common file-name
    conventions; otherwise fall back to the lower-case stem, stable if not an entry id.
    """
    header_id = header_id.strip().lower()
    if _PDB_ID.fullmatch(header_id):
        return header_id
    lowered = stem.lower()
    for pattern in _STEM_PATTERNS:
        match = pattern.fullmatch(lowered)
        if match:
            return match.group(1)
    return lowered


def read_structure(
    path: str | Path, min_residues: int = 8, entry: str | None = None
) -> list[Backbone]:
    """Backbones of the protein chains in the first model of one PDB/mmCIF file.

    Only polymer peptide chains with at least ``min_residues`` residues that have a CA are
    kept; where an atom has alternate locations the highest-occupancy one wins (the first on
    a tie), and of point mutations modelled at one residue only the first is read.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file cannot be parsed, has no atoms, or (PDB format) a backbone atom
            of the first model has a coordinate field that is not a number; the message names
            the file.
    """
    gemmi = _import_gemmi()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No structure file at {path}")
    structure = _parse(gemmi, path)
    if len(structure) == 0 or structure[0].count_atom_sites() == 0:
        raise ValueError(f"Cannot parse structure file {path}: it contains no atoms")
    structure.setup_entities()
    stem = structure_stem(path)
    if entry is None:
        entry = guess_entry(stem, dict(structure.info).get("_entry.id", ""))
    prefix = stem if entry == stem.lower() else entry
    chains = []
    for chain in structure[0]:
        residues = _protein_residues(gemmi, chain)
        if not residues:
            continue
        name = f"{prefix}_{chain.name}" if chain.name.strip() else prefix
        backbone = _backbone(name, entry, residues)
        if backbone.num_resolved >= min_residues:
            chains.append(backbone)
    return chains


def load_structure_dir(
    path: str | Path,
    min_residues: int = 8,
    on_error: Literal["skip", "raise"] = "skip",
) -> list[Backbone]:
    """All protein chains of every structure file under a folder, searched recursively.

    A broken file should not cost a long run, so by default it is skipped with a warning that
    names it; ``on_error="raise"`` makes it a ``ValueError`` instead. Files are read in sorted
    order, so the result is the same on every machine.
    """
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"No such structure folder: {root}")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    files = [f for f in files if is_structure_file(f)]
    backbones: list[Backbone] = []
    for file in files:
        try:
            backbones.extend(read_structure(file, min_residues=min_residues))
        except ValueError as error:
            if on_error == "raise":
                raise
            warnings.warn(f"Skipping {file}: {error}", stacklevel=2)
    if not backbones:
        raise ValueError(
            f"No protein chains with >= {min_residues} residues found in {root} "
            f"({len(files)} structure files with suffixes {', '.join(STRUCTURE_SUFFIXES)}[.gz])"
        )
    return backbones


_PARSE_ERRORS = (RuntimeError, ValueError, OSError, UnicodeDecodeError)


def _parse(gemmi, path: Path):
    # gemmi raises a bare IndexError (C++ vector range check) on an mmCIF with no data block
    pdb_format = _is_pdb_format(path)
    if pdb_format:
        _check_pdb_coordinates(path)
    elif not _has_cif_content(path):
        raise ValueError(
            f"Cannot parse structure file {path}: it is empty (no mmCIF data block; "
            "an interrupted download?)"
        )
    try:
        return gemmi.read_structure(str(path))
    except _PARSE_ERRORS as error:
        if not pdb_format:
            raise ValueError(f"Cannot parse structure file {path}: {error}") from error
        first_error = error
    # Pre-1996 PDB files put a segment id and line numbers in columns 73-80, where the
    # element and charge columns now are; the coordinates before column 73 are still good.
    try:
        return gemmi.read_pdb(str(path), max_line_length=72)
    except _PARSE_ERRORS:
        raise ValueError(f"Cannot parse structure file {path}: {first_error}") from first_error


def _open_bytes(path: Path):
    """The file's bytes, decompressed when its name ends in ``.gz``."""
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


_COORDINATE_COLUMNS = (("x", 30, 38), ("y", 38, 46), ("z", 46, 54))
_BACKBONE_NAMES = frozenset(name.encode() for name in BACKBONE_ATOMS)
# what gemmi's number reader reads in full; it stops early at anything else ("1_000" -> 1)
_NUMBER = re.compile(rb"\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*")


def _check_pdb_coordinates(path: Path) -> None:
    """Refuse a backbone atom of the first model whose coordinate field is not a number.

    gemmi reads such a field as 0, or as its leading number ("1.2.3" as 1.2), so a corrupted
    file would silently move atoms.  Only the atoms this module reads are checked.
    """
    try:
        with _open_bytes(path) as handle:
            for number, line in enumerate(handle, start=1):
                if line.startswith(b"ENDMDL"):
                    return
                if not line.startswith((b"ATOM", b"HETATM")) or line[12:16].strip() not in _BACKBONE_NAMES:
                    continue
                for axis, start, stop in _COORDINATE_COLUMNS:
                    field = line[start:stop]
                    if not _NUMBER.fullmatch(field):
                        raise ValueError(
                            f"Cannot parse structure file {path}: line {number}: atom "
                            f"{line[12:16].strip().decode(errors='replace')} has {field.decode(errors='replace')!r} "
                            f"as its {axis} coordinate (columns {start + 1}-{stop} must hold a number)"
                        )
    except (OSError, EOFError, zlib.error):
        return  # unreadable as text (bad gzip ...): gemmi names the problem


def _has_cif_content(path: Path) -> bool:
    """False when the (possibly gzipped) file holds only blank lines and ``#`` comments.

    Reads up to the first meaningful line, normally line 1 (``data_...``). A file that cannot
    be read this way (bad gzip ...) counts as having content: gemmi then names the problem.
    """
    try:
        with _open_bytes(path) as handle:
            for line in handle:
                stripped = line.strip()
                if stripped and not stripped.startswith(b"#"):
                    return True
    except (OSError, EOFError, zlib.error):
        return True
    return False


def _is_pdb_format(path: Path) -> bool:
    name = path.name.lower()
    return name.removesuffix(".gz").endswith((".pdb", ".ent"))


def _protein_residues(gemmi, chain) -> list:
    polymer = chain.get_polymer()
    if len(polymer) == 0:
        return []
    kind = polymer.check_polymer_type()
    if kind not in (gemmi.PolymerType.PeptideL, gemmi.PolymerType.PeptideD):
        if kind != gemmi.PolymerType.Unknown:
            return []
        amino = sum(_is_amino_acid(gemmi, r.name) for r in polymer)
        if 2 * amino <= len(polymer):
            return []
    return list(polymer.first_conformer())


def _is_amino_acid(gemmi, name: str) -> bool:
    info = gemmi.find_tabulated_residue(name)
    return name in THREE_TO_ONE or (info is not None and info.is_amino_acid())


def _backbone(chain_id: str, entry: str, residues: list) -> Backbone:
    coords = np.zeros((len(residues), len(BACKBONE_ATOMS), 3), dtype=np.float32)
    mask = np.zeros((len(residues), len(BACKBONE_ATOMS)), dtype=bool)
    sequence = []
    for i, residue in enumerate(residues):
        sequence.append(THREE_TO_ONE.get(residue.name, UNKNOWN_RESIDUE))
        best: dict[str, object] = {}
        for atom in residue:
            if atom.name in BACKBONE_ATOMS and (
                atom.name not in best or atom.occ > best[atom.name].occ
            ):
                best[atom.name] = atom
        for j, name in enumerate(BACKBONE_ATOMS):
            if name in best:
                pos = best[name].pos
                coords[i, j] = (pos.x, pos.y, pos.z)
                mask[i, j] = True
    return Backbone.from_atoms(chain_id, entry, "".join(sequence), coords, mask)
