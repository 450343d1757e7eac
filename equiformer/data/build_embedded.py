"""Rebuild the embedded backbone set (``backbones.npz`` + ``SOURCES.txt``) from offline sources.

    apt-get install theseus-examples
    pip download --no-deps --no-binary :all: mdanalysistests==2.11.0
    python -m equiformer.data.build_embedded \\
        --theseus /usr/share/doc/theseus/examples \\
        --mdanalysistests mdanalysistests-2.11.0.tar.gz --out equiformer/data

Both sources are re-distributions of wwPDB entries. Chains whose backbone geometry is
identical to one already taken (crystallographic copies, the same file shipped twice) are
dropped; different copies of one entry are kept, and ``split_by_entry`` keeps them together.
Needs gemmi (``pip install "equiformer[denoise]"``).
"""

from __future__ import annotations

import argparse
import re
import tarfile
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from .backbone import BACKBONE_ATOMS, Backbone
from .embedded import EMBEDDED_FILE, pack_backbones
from .pdb import is_structure_file, read_structure

SOURCES_FILE = "SOURCES.txt"
MIN_RESIDUES = 8
DUPLICATE_TOLERANCE = 0.01  # Å, on every CA-CA distance: identical up to a rigid motion
# MDAnalysisTests/data/dssp/README.md: files named like '1abcA.pdb.gz' (entry + chain) are
# real chains; others there ('1mr1D_failing', 'wrong_hydrogens') are deliberately broken.
_DSSP_CHAIN_FILE = re.compile(r"[1-9][a-z0-9]{3}[a-z0-9]\.pdb\.gz", re.IGNORECASE)
_DSSP_DIR = "MDAnalysisTests/data/dssp"

Sourced = tuple[Backbone, str]


def read_theseus(folder: Path) -> list[Sourced]:
    """Every chain of every structure file under the theseus-examples folder."""
    if not folder.is_dir():
        raise FileNotFoundError(f"theseus examples folder not found: {folder}")
    chains: list[Sourced] = []
    for file in sorted(p for p in folder.rglob("*") if is_structure_file(p)):
        label = f"theseus-examples {file.relative_to(folder)}"
        chains += [(b, label) for b in read_structure(file, min_residues=MIN_RESIDUES)]
    return chains


def read_mdanalysistests(source: Path) -> list[Sourced]:
    """The DSSP test chains of an mdanalysistests sdist (``.tar.gz``) or unpacked folder."""
    if not source.exists():
        raise FileNotFoundError(f"mdanalysistests sdist or folder not found: {source}")
    if source.is_dir():
        return _read_dssp_folder(source, source)
    with tempfile.TemporaryDirectory() as scratch, tarfile.open(source) as archive:
        members = [m for m in archive.getmembers() if m.isfile() and _is_dssp_chain(m.name)]
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        archive.extractall(scratch, members=members, **safe)
        return _read_dssp_folder(Path(scratch), Path(source.name))


def _read_dssp_folder(root: Path, label_root: Path) -> list[Sourced]:
    files = sorted(p for p in root.rglob("*.pdb.gz") if _is_dssp_chain(p.as_posix()))
    if not files:
        raise ValueError(f"no {_DSSP_DIR}/<entry><chain>.pdb.gz files found in {root}")
    chains: list[Sourced] = []
    for file in files:
        label = f"mdanalysistests {label_root / file.relative_to(root)}"
        chains += [(b, label) for b in read_structure(file, min_residues=MIN_RESIDUES)]
    return chains


def _is_dssp_chain(name: str) -> bool:
    return _DSSP_DIR in name and bool(_DSSP_CHAIN_FILE.fullmatch(name.rsplit("/", 1)[-1]))


def drop_duplicates(chains: list[Sourced]) -> tuple[list[Sourced], list[str]]:
    """Keep the first of chains with the same sequence, atoms and CA-CA distances."""
    kept: list[Sourced] = []
    dropped: list[str] = []
    by_content: dict[tuple[str, bytes], list[Backbone]] = defaultdict(list)
    for backbone, label in chains:
        twins = by_content[(backbone.sequence, backbone.atom_mask.tobytes())]
        original = next((t for t in twins if _same_geometry(t, backbone)), None)
        if original is not None:
            dropped.append(f"{backbone.id} ({label}) = {original.id}")
            continue
        twins.append(backbone)
        kept.append((backbone, label))
    return kept, dropped


def _same_geometry(a: Backbone, b: Backbone) -> bool:
    ca = BACKBONE_ATOMS.index("CA")
    present = a.atom_mask[:, ca]
    da = _distances(a.coords[present, ca])
    db = _distances(b.coords[present, ca])
    return bool(np.abs(da - db).max(initial=0.0) < DUPLICATE_TOLERANCE)


def _distances(points: np.ndarray) -> np.ndarray:
    points = points.astype(np.float64)
    return np.linalg.norm(points[:, None] - points[None], axis=-1)


def unique_ids(chains: list[Sourced]) -> list[Sourced]:
    """Suffix repeated ids (the same chain of an entry from two files) with #2, #3, ..."""
    seen: dict[str, int] = defaultdict(int)
    result = []
    for backbone, label in chains:
        seen[backbone.id] += 1
        if seen[backbone.id] > 1:
            backbone.id = f"{backbone.id}#{seen[backbone.id]}"
        result.append((backbone, label))
    return result


def sources_text(chains: list[Sourced], dropped: list[str], sources: list[str]) -> str:
    """The human-readable provenance list that ships beside ``backbones.npz``."""
    entries = {b.entry for b, _ in chains}
    residues = sum(len(b) for b, _ in chains)
    lines = [
        "Embedded backbone set of equiformer: equiformer/data/backbones.npz",
        "",
        f"{len(chains)} chains, {len(entries)} PDB entries, {residues} residues; backbone "
        "atoms N, CA, C, O rounded to 0.001 Å; first model of each file.",
        "Rebuilt by: python -m equiformer.data.build_embedded "
        + " ".join(f"--{s}" for s in sources),
        "",
        "Licence: the atomic coordinates are entries of the Protein Data Bank archive,",
        "distributed by the wwPDB under CC0 1.0 (public domain dedication). They were taken",
        "from two offline redistributions of those entries:",
        "  * Debian package theseus-examples (example inputs of THESEUS; the package is",
        "    GPL-3+ for its code): /usr/share/doc/theseus/examples/ -- cytochrome c",
        "    (ASTRAL/SCOP domain files, e.g. d1kyow_ = entry 1kyo chain W), lactate/malate",
        "    dehydrogenases (ldh/), trypsin-like serine proteases (trypsins/, written out",
        "    superposed by THESEUS) and three NMR entries (1adz, 1s40, 2sdf);",
        "  * PyPI sdist mdanalysistests 2.11.0 (package LGPL/GPL for its code):",
        "    MDAnalysisTests/data/dssp/<entry><chain>.pdb.gz.",
        "",
        "Entry ids: the PDB ID code in the HEADER record when it is one, otherwise the file",
        "name (1abc_A, 1ABC_A, 1abcA, d1abca_ -> 1abc). Every chain here has a real PDB",
        "entry id; train/validation splits group chains by it.",
        "Chain breaks are found from geometry (C-N > 2.0 Å or missing atoms), since several",
        "source files are renumbered variants of one protein.",
        "",
        f"Dropped as geometric duplicates of a kept chain ({len(dropped)}):",
        *(f"  {d}" for d in dropped),
        "",
        "id\tentry\tresidues\tsource",
        *(f"{b.id}\t{b.entry}\t{len(b)}\t{label}" for b, label in chains),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Read both sources, drop duplicates, write the npz and SOURCES.txt."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--theseus", type=Path, default=Path("/usr/share/doc/theseus/examples"))
    parser.add_argument(
        "--mdanalysistests", type=Path, required=True,
        help="mdanalysistests sdist (.tar.gz) or its unpacked folder",
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent,
        help="folder for backbones.npz and SOURCES.txt",
    )
    args = parser.parse_args(argv)
    # read_structure raises on a file it cannot parse: a build never silently loses a source
    chains = read_theseus(args.theseus) + read_mdanalysistests(args.mdanalysistests)
    chains, dropped = drop_duplicates(chains)
    chains = unique_ids(chains)
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / EMBEDDED_FILE, **pack_backbones([b for b, _ in chains]))
    sources = [
        f"theseus {args.theseus}",
        f"mdanalysistests {args.mdanalysistests.name}",
        f"out {args.out}",
    ]
    (args.out / SOURCES_FILE).write_text(sources_text(chains, dropped, sources))
    size = (args.out / EMBEDDED_FILE).stat().st_size
    print(
        f"wrote {len(chains)} chains ({len(dropped)} duplicates dropped), {size} bytes "
        f"to {args.out / EMBEDDED_FILE}"
    )


if __name__ == "__main__":
    main()
