"""Reading PDB / mmCIF files (plain and gzipped) and folders of them."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
import textwrap

import gemmi
import numpy as np
import pytest

from equiformer.data import backbone_to_pdb, load_structure_dir, read_structure
from equiformer.data.pdb import guess_entry


def _write_text(path, text):
    """Write plain or gzipped text, as the file name says."""
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


def _write_chain(path, backbone, chain_id="A"):
    text = backbone_to_pdb(backbone.coords, backbone.sequence, chain_id)
    return _write_text(path, text + "END\n")


def _to_mmcif(pdb_path, cif_path):
    structure = gemmi.read_structure(str(pdb_path))
    structure.setup_entities()
    return _write_text(cif_path, structure.make_mmcif_document().as_string())


def _assert_same_chain(read, original):
    assert read.sequence == original.sequence
    np.testing.assert_array_equal(read.atom_mask, original.atom_mask)
    np.testing.assert_allclose(read.coords, original.coords, atol=1.5e-3)
    np.testing.assert_array_equal(read.chain_break, original.chain_break)


@pytest.mark.parametrize("name", ["1abc_B.pdb", "1abc_B.pdb.gz", "1abc_B.ent", "1abc_B.ent.gz"])
def test_pdb_round_trip(tmp_path, clean_chain, name):
    path = _write_chain(tmp_path / name, clean_chain, chain_id="B")
    [chain] = read_structure(path)
    _assert_same_chain(chain, clean_chain)
    assert (chain.id, chain.entry) == ("1abc_B", "1abc")


@pytest.mark.parametrize("name", ["2xyz.cif", "2xyz.cif.gz", "2xyz.mmcif", "2xyz.mmcif.gz"])
def test_mmcif_round_trip(tmp_path, clean_chain, name):
    pdb_path = _write_chain(tmp_path / "source.pdb", clean_chain)
    [chain] = read_structure(_to_mmcif(pdb_path, tmp_path / name))
    _assert_same_chain(chain, clean_chain)
    assert chain.entry == "2xyz"


def test_residue_numbering_gap_is_not_trusted_but_geometry_is(tmp_path, clean_chain):
    """Residues 20-22 removed but numbering kept consecutive: the gap is found from C-N."""
    keep = np.r_[0:20, 23 : len(clean_chain)]
    sequence = "".join(clean_chain.sequence[i] for i in keep)
    text = backbone_to_pdb(clean_chain.coords[keep], sequence) + "END\n"
    (tmp_path / "gap.pdb").write_text(text)
    [chain] = read_structure(tmp_path / "gap.pdb")
    assert np.flatnonzero(chain.chain_break).tolist() == [20]


PDB_SNIPPET = textwrap.dedent(
    """\
    HEADER    TEST PROTEIN                            01-JAN-00   3XYZ
    MODEL        1
    {atoms1}
    TER
    ENDMDL
    MODEL        2
    {atoms2}
    TER
    ENDMDL
    END
    """
)


def _atom(serial, name, resname, chain, resnum, xyz, altloc=" ", occ=1.0, record="ATOM  "):
    x, y, z = xyz
    element = name[0]
    return (
        f"{record}{serial:5d} {name if len(name) == 4 else ' ' + name:<4s}{altloc}{resname:>3s} "
        f"{chain}{resnum:4d}    {x:8.3f}{y:8.3f}{z:8.3f}{occ:6.2f}{20.0:6.2f}          "
        f"{element:>2s}  "
    )


def _residue_lines(serial, resname, resnum, offset, record="ATOM  ", chain="A"):
    base = np.array([3.8 * resnum, 0.0, offset])
    layout = {"N": (-1.2, 0.4, 0), "CA": (0, 0, 0), "C": (1.4, 0.3, 0), "O": (1.9, 1.4, 0)}
    return [
        _atom(serial + k, name, resname, chain, resnum, base + np.array(d), record=record)
        for k, (name, d) in enumerate(layout.items())
    ]


def test_first_model_altlocs_modified_residues_and_non_protein(tmp_path):
    names = ["ALA", "MSE", "SEP", "GLY", "TRP", "LYS", "VAL", "LEU", "ILE"]
    lines = []
    for i, resname in enumerate(names):
        record = "ATOM  " if resname not in ("MSE", "SEP") else "HETATM"
        lines += _residue_lines(4 * i + 1, resname, i + 1, 0.0, record=record)
    # residue 4 (GLY) CA: altloc A (occupancy 0.4) and B (0.6, should win)
    ca_a = _atom(900, "CA", "GLY", "A", 4, (30.0, 0.0, 0.0), altloc="A", occ=0.4)
    ca_b = _atom(901, "CA", "GLY", "A", 4, (31.0, 0.0, 0.0), altloc="B", occ=0.6)
    index = next(i for i, line in enumerate(lines) if " CA  GLY" in line)
    lines[index : index + 1] = [ca_a, ca_b]
    lines += [_atom(950, "O", "HOH", "W", 1, (50.0, 50.0, 50.0), record="HETATM")]
    model2 = [line[:46] + "  99.000" + line[54:] for line in lines]
    text = PDB_SNIPPET.format(atoms1="\n".join(lines), atoms2="\n".join(model2))
    path = tmp_path / "mixed.pdb"
    path.write_text(text)

    [chain] = read_structure(path)
    assert chain.entry == "3xyz" and chain.id == "3xyz_A"
    assert chain.sequence == "AMXGWKVLI"
    np.testing.assert_allclose(chain.coords[3, 1], (31.0, 0.0, 0.0))
    assert np.abs(chain.coords[:, :, 2]).max() < 1.0  # model 2 (z = 99) ignored
    assert read_structure(path, min_residues=10) == []


def test_short_chain_filtered_and_nucleic_acid_skipped(tmp_path):
    lines = []
    for i in range(5):
        lines += _residue_lines(4 * i + 1, "ALA", i + 1, 0.0)
    for i in range(6):
        base = np.array([3.8 * i, 20.0, 0.0])
        for k, name in enumerate(["P", "C4'", "N1"]):
            lines.append(_atom(100 + 3 * i + k, name, " DA", "B", i + 1, base + k))
    path = tmp_path / "4abc.pdb"
    path.write_text("\n".join(lines) + "\nEND\n")
    assert read_structure(path) == []
    [chain] = read_structure(path, min_residues=5)
    assert chain.id == "4abc_A" and chain.sequence == "AAAAA"


@pytest.mark.parametrize(
    ("stem", "header", "entry"),
    [
        ("1ABC_A", "", "1abc"),
        ("1ahsA", "", "1ahs"),
        ("pdb1abc", "", "1abc"),
        ("d1kyow_", "0000", "1kyo"),
        ("model_7", "", "model_7"),
        ("whatever", "2SDF", "2sdf"),
        ("1mr1D_failing", "", "1mr1d_failing"),
    ],
)
def test_guess_entry(stem, header, entry):
    assert guess_entry(stem, header) == entry


def test_folder_walk_skips_and_names_malformed_files(tmp_path, few_chains):
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    _write_chain(tmp_path / "1aaa_A.pdb", few_chains[0])
    _write_chain(nested / "1bbb_C.pdb.gz", few_chains[1], chain_id="C")
    (tmp_path / "notes.txt").write_text("not a structure, not even looked at")
    bad = tmp_path / "a" / "broken.cif"
    bad.write_text("data_x\nloop_\n_atom_site.id\n_atom_site.Cartn_x\n1\n")
    empty = nested / "empty.pdb"
    empty.write_text("REMARK nothing here\n")

    with pytest.warns(UserWarning) as caught:
        chains = load_structure_dir(tmp_path)
    messages = " ".join(str(w.message) for w in caught)
    assert str(bad) in messages and str(empty) in messages
    assert sorted(c.id for c in chains) == ["1aaa_A", "1bbb_C"]

    with pytest.raises(ValueError) as error:  # files are read in sorted order
        load_structure_dir(tmp_path, on_error="raise")
    assert str(empty) in str(error.value)


@pytest.mark.parametrize("junk", ["junk.pdb.gz", "junk.cif.gz"])
def test_folder_errors_name_the_path(tmp_path, junk):
    """A corrupt gzip stream is a ValueError naming the file (it escaped as zlib.error from
    the mmCIF emptiness check and ended the whole folder walk)."""
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_structure_dir(missing)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_structure(missing / "x.pdb")
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / junk).write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    with pytest.raises(ValueError, match=junk):
        read_structure(only_bad / junk)
    with pytest.warns(UserWarning, match=junk):
        with pytest.raises(ValueError, match="only_bad"):
            load_structure_dir(only_bad)


@pytest.mark.parametrize("name, text", [
    ("3emp.cif", ""), ("3emp.mmcif", "\n  \n"), ("3emp.cif", "# only a comment\n#\n"),
    ("3emp.cif.gz", ""), ("3emp.mmcif.gz", "# comment\n"),
])
def test_empty_mmcif_is_a_value_error_naming_the_file(tmp_path, few_chains, name, text):
    """gemmi itself raises a bare IndexError on an mmCIF without a data block."""
    empty = _write_text(tmp_path / name, text)
    with pytest.raises(ValueError, match=f"{empty}: it is empty"):
        read_structure(empty)
    _write_chain(tmp_path / "1aaa_A.pdb", few_chains[0])
    _write_chain(tmp_path / "2bbb_A.pdb", few_chains[1])
    with pytest.warns(UserWarning, match=str(empty)):
        chains = load_structure_dir(tmp_path)
    assert sorted(c.id for c in chains) == ["1aaa_A", "2bbb_A"]
    with pytest.raises(ValueError, match=str(empty)):
        load_structure_dir(tmp_path, on_error="raise")


def test_legacy_columns_73_80_are_tolerated(tmp_path, clean_chain):
    """Old PDB files put segment ids and line numbers where element and charge now are."""
    text = backbone_to_pdb(clean_chain.coords, clean_chain.sequence)
    legacy = [
        line[:72] + f"1ABC{k + 100:4d}" if line.startswith("ATOM") else line
        for k, line in enumerate(text.splitlines())
    ]
    path = tmp_path / "legacy.pdb"
    path.write_text("\n".join(legacy) + "\nEND\n")
    [chain] = read_structure(path)
    _assert_same_chain(chain, clean_chain)


def test_import_does_not_load_gemmi_or_matplotlib():
    code = "import sys, equiformer.data; print('gemmi' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_gzip_and_plain_give_identical_records(tmp_path, few_chains):
    plain = _write_chain(tmp_path / "5abc_A.pdb", few_chains[2])
    with plain.open("rb") as src, gzip.open(tmp_path / "5abc_A.pdb.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    [a] = read_structure(plain)
    [b] = read_structure(tmp_path / "5abc_A.pdb.gz")
    np.testing.assert_array_equal(a.coords, b.coords)
    assert a.sequence == b.sequence == few_chains[2].sequence


@pytest.mark.parametrize("field", ["     abc", "  1.2.3 ", "        ", " 12.5-3 ", " 1_000  ", "   nan  "])
@pytest.mark.parametrize("gz", [False, True])
def test_malformed_pdb_coordinate_is_an_error_naming_file_and_line(tmp_path, clean_chain, field, gz):
    """gemmi reads a PDB coordinate field it cannot parse as 0 (or as its leading number), which
    would silently move the atom; such a file must be refused, naming where the field is."""
    lines = backbone_to_pdb(clean_chain.coords, clean_chain.sequence).splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("ATOM") and line[12:16].strip() == "CA")
    lines[index] = lines[index][:38] + field + lines[index][46:]  # the y column
    path = _write_text(tmp_path / ("4bad_A.pdb.gz" if gz else "4bad_A.pdb"), "\n".join(lines) + "\nEND\n")
    with pytest.raises(ValueError, match=rf"{path}: line {index + 1}: .*CA.* y coordinate"):
        read_structure(path)


def test_coordinates_of_other_atoms_and_later_models_are_not_checked(tmp_path, clean_chain):
    """Only the atoms read (backbone, first model) must have numbers: a side-chain atom or a
    second model with a broken field does not cost the chain."""
    lines = backbone_to_pdb(clean_chain.coords, clean_chain.sequence).splitlines()
    atoms = [line for line in lines if line.startswith("ATOM")]
    side = atoms[0][:12] + " CB " + atoms[0][16:30] + "     abc" + atoms[0][38:]
    model_two = [line[:30] + "     abc" + line[38:] for line in atoms]
    text = "\n".join(["MODEL        1", side, *lines, "ENDMDL", "MODEL        2", *model_two, "ENDMDL", "END"])
    [chain] = read_structure(_write_text(tmp_path / "4oka_A.pdb", text + "\n"))
    _assert_same_chain(chain, clean_chain)
