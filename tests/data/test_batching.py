"""collate: shapes, tokens, bond graph and deterministic cropping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from equiformer.data import NUM_BACKBONE_TOKENS, Backbone, collate, residue_index
from equiformer.data.batching import crop_window


def _expected_bonds(backbone: Backbone) -> set[tuple[int, int]]:
    """Bonds listed one by one, written independently of the vectorised code."""
    bonds = set()
    m = backbone.atom_mask
    for r in range(len(backbone)):
        for a, b in ((0, 1), (1, 2), (2, 3)):
            if m[r, a] and m[r, b]:
                bonds.add((4 * r + a, 4 * r + b))
        if r + 1 < len(backbone) and m[r, 2] and m[r + 1, 0] and not backbone.chain_break[r + 1]:
            bonds.add((4 * r + 2, 4 * (r + 1)))
    return bonds


def _damaged(chain: Backbone) -> Backbone:
    """The same chain with a gap after residue 9 and residue 20's O missing."""
    coords = chain.coords.copy()
    coords[10:] += 8.0
    mask = chain.atom_mask.copy()
    mask[20, 3] = False
    return Backbone.from_atoms("d", "d", chain.sequence, coords, mask)


def test_shapes_padding_and_tokens(few_chains):
    lengths = [len(b) for b in few_chains]
    batch = collate(few_chains, max_residues=1000)
    b, n = len(few_chains), 4 * max(lengths)
    assert batch.tokens.shape == (b, n) and batch.tokens.dtype == torch.int64
    assert batch.coords.shape == (b, n, 3) and batch.coords.dtype == torch.float32
    assert batch.mask.shape == (b, n) and batch.mask.dtype == torch.bool
    assert batch.adj_mat.shape == (b, n, n) and batch.adj_mat.dtype == torch.bool
    assert batch.residue_mask.shape == (b, max(lengths))
    assert batch.residue_mask.sum(1).tolist() == lengths
    assert int(batch.tokens.max()) < NUM_BACKBONE_TOKENS == 84
    for i, chain in enumerate(few_chains):
        expected = residue_index(chain.sequence)[:, None] * 4 + np.arange(4)
        np.testing.assert_array_equal(batch.tokens[i, : 4 * len(chain)], expected.reshape(-1))
        atoms = 4 * len(chain)
        np.testing.assert_array_equal(batch.coords[i, :atoms], chain.coords.reshape(-1, 3))
        assert not batch.mask[i, 4 * len(chain) :].any()
        assert (batch.coords[i, 4 * len(chain) :] == 0).all()


def test_adjacency_matches_bond_list(clean_chain, few_chains):
    chains = [clean_chain, _damaged(clean_chain), few_chains[0]]
    batch = collate(chains, max_residues=10_000)
    adj = batch.adj_mat
    assert torch.equal(adj, adj.transpose(1, 2))
    assert not adj.diagonal(dim1=1, dim2=2).any()
    length = len(clean_chain)
    assert int(adj[0].sum()) // 2 == 3 * length + (length - 1)  # 3 per residue + peptides
    # the damaged copy loses the C(9)-N(10) peptide bond and the C=O of residue 20
    assert int(adj[1].sum()) // 2 == 3 * length + (length - 1) - 2
    for i, chain in enumerate(chains):
        found = {(int(p), int(q)) for p, q in torch.nonzero(torch.triu(adj[i]))}
        assert found == _expected_bonds(chain)
        assert not (adj[i] & ~batch.mask[i][:, None]).any()
    # every bond in a real structure is short
    p, q = torch.nonzero(adj[0], as_tuple=True)
    assert torch.linalg.norm(batch.coords[0, p] - batch.coords[0, q], dim=-1).max() < 2.0


def test_crop_is_a_deterministic_contiguous_window(clean_chain):
    window = 25
    first = collate([clean_chain] * 4, window, torch.Generator().manual_seed(7))
    again = collate([clean_chain] * 4, window, torch.Generator().manual_seed(7))
    other = collate([clean_chain] * 4, window, torch.Generator().manual_seed(8))
    assert torch.equal(first.coords, again.coords) and torch.equal(first.tokens, again.tokens)
    assert not torch.equal(first.coords, other.coords)
    assert first.tokens.shape == (4, 4 * window)
    full = torch.from_numpy(clean_chain.coords.reshape(-1, 3))
    for crop in first.coords:
        starts = range(len(clean_chain) - window + 1)
        matches = [s for s in starts if torch.equal(full[4 * s : 4 * (s + window)], crop)]
        assert len(matches) == 1
    assert int(first.adj_mat[0].sum()) // 2 == 4 * window - 1


def _with_unresolved_tail(chain: Backbone, tail: int) -> Backbone:
    """``chain`` after ``tail`` residues without any atom (as SidechainNet keeps them)."""
    coords = np.concatenate([np.zeros((tail, 4, 3), np.float32), chain.coords])
    mask = np.concatenate([np.zeros((tail, 4), bool), chain.atom_mask])
    return Backbone.from_atoms(chain.id, chain.entry, "A" * tail + chain.sequence, coords, mask)


def test_crops_never_fall_on_residues_without_atoms(clean_chain):
    """A long unresolved tail: every drawn window holds atoms (an empty crop has nothing to denoise
    and scored RMSD 0), and the windows that do are all drawn."""
    window, tail = 10, 200
    chain = _with_unresolved_tail(clean_chain, tail)
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        assert collate([chain], window, generator).mask.any()
    present = chain.atom_mask.any(1)
    drawn = {crop_window(len(chain), window, generator, present).start for _ in range(2000)}
    assert drawn == set(range(tail - window + 1, len(chain) - window + 1))


def test_crop_draws_unchanged_when_every_window_has_atoms(clean_chain):
    present = clean_chain.atom_mask.any(1)
    assert present.all()
    a, b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(50):
        assert crop_window(len(clean_chain), 12, a, present) == crop_window(len(clean_chain), 12, b)
    with pytest.raises(ValueError, match="present"):
        crop_window(len(clean_chain), 12, a, np.zeros(len(clean_chain), bool))


def test_short_chains_are_not_cropped(few_chains):
    short = few_chains[0]
    batch = collate([short], max_residues=len(short), generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(batch.coords[0].numpy(), short.coords.reshape(-1, 3))


def test_bad_arguments(few_chains):
    with pytest.raises(ValueError, match="at least one"):
        collate([], 10)
    with pytest.raises(ValueError, match="max_residues"):
        collate(few_chains, 0)


def test_to_moves_every_tensor(few_chains):
    batch = collate(few_chains, 30).to("meta")  # a device nothing starts on
    assert all(t.device.type == "meta" for t in vars(batch).values())
