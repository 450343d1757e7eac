"""split_by_entry: deterministic, order-independent, never leaks an entry."""

from __future__ import annotations

import random

import pytest

from equiformer.data import split_by_entry
from equiformer.data.splits import entry_rank


def _ids(chains):
    return sorted(b.id for b in chains)


def test_disjoint_complete_and_sized(embedded):
    train, val = split_by_entry(embedded, val_fraction=0.1, seed=0)
    assert {b.entry for b in train}.isdisjoint({b.entry for b in val})
    assert _ids(train + val) == _ids(embedded)
    entries = {b.entry for b in embedded}
    assert len({b.entry for b in val}) == round(0.1 * len(entries))


def test_independent_of_input_order_and_repeatable(embedded):
    train, val = split_by_entry(embedded, seed=3)
    shuffled = list(embedded)
    random.Random(1).shuffle(shuffled)
    train2, val2 = split_by_entry(shuffled, seed=3)
    assert _ids(train) == _ids(train2) and _ids(val) == _ids(val2)
    assert [b.id for b in split_by_entry(embedded, seed=3)[1]] == [b.id for b in val]


def test_seed_changes_the_split(embedded):
    assert _ids(split_by_entry(embedded, seed=0)[1]) != _ids(split_by_entry(embedded, seed=1)[1])


def test_rank_is_a_fixed_function_of_the_text():
    """sha256-based, so every machine and every Python hash seed agrees."""
    assert entry_rank("1abc", 0) == 0x4EDE7D0775CF0042  # first 8 bytes of sha256(b"0:1abc")
    assert entry_rank("2sdf", 7) == 0x40067EE4651C18E8
    assert entry_rank("1abc", 0) != entry_rank("1abc", 1)


def test_small_inputs_still_validate(few_chains):
    two = [few_chains[0], few_chains[1]]
    assert len({b.entry for b in two}) == 2
    train, val = split_by_entry(two, val_fraction=0.01)
    assert len(train) == 1 and len(val) == 1
    train, val = split_by_entry(two, val_fraction=0.99)
    assert len(train) == 1 and len(val) == 1
    train, val = split_by_entry(few_chains[:1])
    assert len(train) == 1 and val == []


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 2])
def test_bad_fraction(embedded, fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        split_by_entry(embedded, val_fraction=fraction)
