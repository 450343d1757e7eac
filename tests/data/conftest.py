"""Shared fixtures: real chains from the embedded set, so tests use real geometry."""

from __future__ import annotations

import pytest

from equiformer.data import Backbone, load_embedded


@pytest.fixture(scope="session")
def embedded() -> list[Backbone]:
    return load_embedded()


@pytest.fixture(scope="session")
def clean_chain(embedded) -> Backbone:
    """A real chain with every backbone atom present and no chain break."""
    for backbone in embedded:
        complete = backbone.atom_mask.all() and not backbone.chain_break.any()
        if complete and 60 <= len(backbone) <= 200:
            return backbone
    raise AssertionError("the embedded set should contain a complete, unbroken chain")


@pytest.fixture(scope="session")
def few_chains(embedded) -> list[Backbone]:
    """Three short real chains of different lengths."""
    chosen, lengths = [], set()
    for backbone in sorted(embedded, key=len):
        if len(backbone) not in lengths:
            chosen.append(backbone)
            lengths.add(len(backbone))
        if len(chosen) == 3:
            return chosen
    raise AssertionError("expected chains of three lengths")
