"""build_embedded on miniature copies of its two sources (folder and sdist forms)."""

from __future__ import annotations

import gzip
import tarfile

import numpy as np
import pytest

from equiformer.data import backbone_to_pdb
from equiformer.data.build_embedded import main
from equiformer.data.embedded import unpack_backbones



def _pdb_gz(path, chain, chain_id="A", shift=0.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    text = backbone_to_pdb(chain.coords + shift, chain.sequence, chain_id) + "END\n"
    with gzip.open(path, "wt") as handle:
        handle.write(text)


@pytest.fixture()
def sources(tmp_path, few_chains):
    theseus = tmp_path / "theseus"
    _pdb_gz(theseus / "fam" / "1aaa_A.pdb.gz", few_chains[0])
    _pdb_gz(theseus / "fam" / "1aaa_B.pdb.gz", few_chains[0], "B", shift=5.0)  # a rigid copy
    _pdb_gz(theseus / "d1bbbc_.pdb.gz", few_chains[1], "C")
    dssp = tmp_path / "mdat" / "pkg-1.0" / "MDAnalysisTests" / "data" / "dssp"
    _pdb_gz(dssp / "2cccA.pdb.gz", few_chains[2])
    _pdb_gz(dssp / "2cccA_failing.pdb.gz", few_chains[1])  # deliberately broken: not taken
    sdist = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as archive:
        archive.add(tmp_path / "mdat" / "pkg-1.0", arcname="pkg-1.0")
    return theseus, tmp_path / "mdat", sdist


@pytest.mark.parametrize("form", ["folder", "sdist"])
def test_build_from_both_source_forms(tmp_path, sources, few_chains, form):
    theseus, folder, sdist = sources
    out = tmp_path / f"out_{form}"
    mdat = folder if form == "folder" else sdist
    main(["--theseus", str(theseus), "--mdanalysistests", str(mdat), "--out", str(out)])
    with np.load(out / "backbones.npz", allow_pickle=False) as npz:
        chains = unpack_backbones({k: npz[k] for k in npz.files})
    assert [c.id for c in chains] == ["1bbb_C", "1aaa_A", "2ccc_A"]
    assert [c.entry for c in chains] == ["1bbb", "1aaa", "2ccc"]
    np.testing.assert_allclose(chains[1].coords, few_chains[0].coords, atol=1.5e-3)
    sources_txt = (out / "SOURCES.txt").read_text()
    assert "1aaa_B (theseus-examples fam/1aaa_B.pdb.gz) = 1aaa_A" in sources_txt
    assert "failing" not in sources_txt and "CC0" in sources_txt


def test_build_stops_on_a_broken_source_file(tmp_path, sources):
    theseus, folder, _ = sources
    (theseus / "9zzz_A.pdb").write_text("REMARK no atoms at all\n")
    with pytest.raises(ValueError, match="9zzz_A.pdb"):
        main(["--theseus", str(theseus), "--mdanalysistests", str(folder), "--out", str(tmp_path)])
