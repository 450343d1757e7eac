"""SidechainNet pickles of both layouts, built here from real embedded chains."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from equiformer.data import load_sidechainnet
from equiformer.data.sidechainnet import entry_from_id

MISSING = 5  # residue index left unresolved in every test protein


def _split(chains, ids, layout, coord_key="crd"):
    """A split dict as sidechainnet writes it; side-chain slots hold junk we must ignore."""
    rng = np.random.default_rng(0)
    columns = {"seq": [], "ids": [], "msk": [], coord_key: [], "ang": [], "evo": [], "res": []}
    for chain, pid in zip(chains, ids):
        length = len(chain)
        slots = 14 if layout == "0.7" else 15
        pad = 0.0 if layout == "0.7" else np.nan
        crd = np.full((length, slots, 3), pad)
        crd[:, :4] = chain.coords
        crd[:, 4:9] = rng.normal(size=(length, 5, 3)) * 10  # side chain, must be ignored
        crd[MISSING] = pad
        mask = "".join("-" if i == MISSING else "+" for i in range(length))
        columns["seq"].append(chain.sequence)
        columns["ids"].append(pid)
        columns["msk"].append(mask)
        columns[coord_key].append(crd.reshape(-1, 3) if layout == "0.7" else crd)
        columns["ang"].append(np.zeros((length, 12)))
        columns["evo"].append(np.zeros((length, 21)))
        columns["res"].append(2.0)
    return columns


def _pickle(path, chains, layout, coord_key="crd"):
    thinning = "thinning" if layout == "0.7" else "casp_thinning"
    data = {
        "train": _split(chains[:2], ["1ABC_1_A", "1ABC_1_B"], layout, coord_key),
        "valid-10": _split(chains[2:], ["10#2XYZ_1_C"], layout, coord_key),
        "test": _split(chains[:1], ["T0865"], layout, coord_key),
        "settings": {thinning: 30, "casp_version": 12},
        "description": "test pickle",
        "date": "today",
    }
    with path.open("wb") as handle:
        pickle.dump(data, handle)
    return path


@pytest.mark.parametrize(
    ("layout", "coord_key"), [("0.7", "crd"), ("1.0", "crd"), ("1.0", "coords")]
)
def test_both_layouts_load_the_same_backbones(tmp_path, few_chains, layout, coord_key):
    path = _pickle(tmp_path / "scn.pkl", few_chains, layout, coord_key)
    loaded = load_sidechainnet(path, splits=("train", "valid-10"))
    assert [b.id for b in loaded] == ["1ABC_1_A", "1ABC_1_B", "10#2XYZ_1_C"]
    assert [b.entry for b in loaded] == ["1abc", "1abc", "2xyz"]
    for backbone, original in zip(loaded, few_chains):
        assert backbone.sequence == original.sequence
        expected_mask = original.atom_mask.copy()
        expected_mask[MISSING] = False
        np.testing.assert_array_equal(backbone.atom_mask, expected_mask)
        np.testing.assert_allclose(backbone.coords[expected_mask], original.coords[expected_mask])
        assert backbone.chain_break[MISSING] and backbone.chain_break[MISSING + 1]


def test_split_selection(tmp_path, few_chains):
    path = _pickle(tmp_path / "scn.pkl", few_chains, "0.7")
    assert [b.id for b in load_sidechainnet(path)] == ["1ABC_1_A", "1ABC_1_B"]
    assert [b.id for b in load_sidechainnet(path, splits="test")] == ["T0865"]
    assert len(load_sidechainnet(path, splits=None)) == 4
    longest = max(len(c) for c in few_chains[:2])
    assert load_sidechainnet(path, min_residues=longest + 1) == []


def test_errors_name_the_path_and_the_missing_key(tmp_path, few_chains):
    with pytest.raises(FileNotFoundError, match="absent.pkl"):
        load_sidechainnet(tmp_path / "absent.pkl")

    text = tmp_path / "text.pkl"
    text.write_text("this is not a pickle")
    with pytest.raises(ValueError, match="text.pkl"):
        load_sidechainnet(text)

    a_list = tmp_path / "list.pkl"
    a_list.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ValueError, match="list.pkl.*dict"):
        load_sidechainnet(a_list)

    path = _pickle(tmp_path / "scn.pkl", few_chains, "1.0")
    with pytest.raises(ValueError, match=r"scn.pkl.*'valid-90'"):
        load_sidechainnet(path, splits=("valid-90",))

    data = pickle.loads(path.read_bytes())
    del data["train"]["crd"]
    (tmp_path / "no_crd.pkl").write_bytes(pickle.dumps(data))
    with pytest.raises(ValueError, match=r"no_crd.pkl.*'crd or coords'"):
        load_sidechainnet(tmp_path / "no_crd.pkl")

    data = pickle.loads(path.read_bytes())
    data["train"]["crd"][0] = data["train"]["crd"][0][:-1]
    (tmp_path / "short.pkl").write_bytes(pickle.dumps(data))
    with pytest.raises(ValueError, match=r"short.pkl.*1ABC_1_A.*shape"):
        load_sidechainnet(tmp_path / "short.pkl")

    data = pickle.loads(path.read_bytes())
    data["train"]["msk"][1] = "+++"
    (tmp_path / "bad_msk.pkl").write_bytes(pickle.dumps(data))
    with pytest.raises(ValueError, match=r"bad_msk.pkl.*1ABC_1_B.*'msk'"):
        load_sidechainnet(tmp_path / "bad_msk.pkl")


@pytest.mark.parametrize("as_given", [
    list, np.array, lambda m: np.array(list(m), dtype=object), lambda m: m.encode(),
    lambda m: np.array([c == "+" for c in m]), lambda m: [int(c == "+") for c in m],
])
def test_mask_as_characters_or_numbers(tmp_path, few_chains, as_given):
    """A list/array of "+"/"-" used to become all True under np.array(..., dtype=bool)."""
    path = _pickle(tmp_path / "scn.pkl", few_chains, "1.0")
    reference = load_sidechainnet(path)
    data = pickle.loads(path.read_bytes())
    for i, mask in enumerate(data["train"]["msk"]):
        data["train"]["msk"][i] = as_given(mask)
        data["train"]["crd"][i][MISSING, :4] = 1.0  # coordinates present, the mask says "-"
    path.write_bytes(pickle.dumps(data))
    for read, expected in zip(load_sidechainnet(path), reference, strict=True):
        np.testing.assert_array_equal(read.atom_mask, expected.atom_mask)
        assert not read.atom_mask[MISSING].any()


@pytest.mark.parametrize("mask", [["+", "x"], np.array(["+", "?"]), [0, 2], [0.5]])
def test_mask_of_other_values_is_named(tmp_path, few_chains, mask):
    path = _pickle(tmp_path / "scn.pkl", few_chains, "1.0")
    data = pickle.loads(path.read_bytes())
    length = len(data["train"]["seq"][1])
    data["train"]["msk"][1] = (list(mask) * length)[:length]
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(ValueError, match=r"scn.pkl: protein '1ABC_1_B' has a mask 'msk'"):
        load_sidechainnet(path)


@pytest.mark.parametrize(
    ("pid", "entry"),
    [("1ABC_1_A", "1abc"), ("70#2AIO_1_B", "2aio"), ("T0865", "T0865"), ("TBM#T0865", "T0865")],
)
def test_entry_from_id(pid, entry):
    assert entry_from_id(pid) == entry
