"""The shipped backbone set: present, fast, real protein geometry, documented sources."""

from __future__ import annotations

import time
from importlib import resources

import numpy as np

from equiformer.data import load_embedded
from equiformer.data.embedded import EMBEDDED_FILE, pack_backbones, unpack_backbones

CA = 1


def test_size_and_identity(embedded):
    assert len(embedded) > 100
    assert len({b.entry for b in embedded}) > 50
    assert len({b.id for b in embedded}) == len(embedded)
    assert all(len(b.entry) == 4 and b.entry == b.entry.lower() for b in embedded)
    assert all(8 <= b.num_resolved and len(b) <= 2000 for b in embedded)
    size = resources.files("equiformer.data").joinpath(EMBEDDED_FILE).stat().st_size
    assert size < 3.2e6


def test_consecutive_ca_distance_is_3_8_within_segments(embedded):
    distances = []
    for b in embedded:
        ca, present = b.coords[:, CA].astype(np.float64), b.atom_mask[:, CA]
        bonded = present[1:] & present[:-1] & ~b.chain_break[1:]
        distances.append(np.linalg.norm(ca[1:] - ca[:-1], axis=-1)[bonded])
    distances = np.concatenate(distances)
    assert distances.size > 50_000
    assert np.mean(np.abs(distances - 3.8) < 0.2) > 0.95  # the rest: cis peptides (~2.9 Å)
    assert distances.max() < 4.5


def test_backbone_bond_lengths(embedded):
    """N-CA 1.46 Å, CA-C 1.52 Å, C=O 1.23 Å: the atoms are what their names say."""
    for (i, j), length in {(0, 1): 1.46, (1, 2): 1.52, (2, 3): 1.23}.items():
        both = np.concatenate([b.atom_mask[:, i] & b.atom_mask[:, j] for b in embedded])
        coords = np.concatenate([b.coords for b in embedded])
        bonds = np.linalg.norm(coords[both, i] - coords[both, j], axis=-1)
        assert abs(np.median(bonds) - length) < 0.03


def test_pack_unpack_is_exact(embedded):
    again = unpack_backbones(pack_backbones(embedded[:40]))
    for a, b in zip(embedded[:40], again):
        assert (a.id, a.entry, a.sequence) == (b.id, b.entry, b.sequence)
        np.testing.assert_array_equal(a.coords, b.coords)
        np.testing.assert_array_equal(a.atom_mask, b.atom_mask)
        np.testing.assert_array_equal(a.chain_break, b.chain_break)


def test_loads_fast_and_fresh(embedded):
    start = time.perf_counter()
    first = load_embedded()
    assert time.perf_counter() - start < 1.0
    first[0].coords[:] = 0.0  # callers own their copy
    assert load_embedded()[0].coords.any()


def test_sources_list_every_chain(embedded):
    text = resources.files("equiformer.data").joinpath("SOURCES.txt").read_text()
    assert "CC0" in text
    listed = {line.split("\t")[0] for line in text.splitlines() if "\t" in line}
    assert {b.id for b in embedded} <= listed
