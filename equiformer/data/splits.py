"""Train/validation split by PDB entry, the same on every machine.

Chains of one entry (crystallographic copies, NMR models, variants) are near-identical, so a
validation set is only honest when whole entries are held out.
"""

from __future__ import annotations

import hashlib
from typing import TypeVar

from .backbone import Backbone

B = TypeVar("B", bound=Backbone)


def entry_rank(entry: str, seed: int = 0) -> int:
    """A stable pseudo-random number for an entry: SHA-256, unlike ``hash()``, is unsalted."""
    digest = hashlib.sha256(f"{seed}:{entry}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def split_by_entry(
    backbones: list[B], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[B], list[B]]:
    """Split chains into (train, validation) with no entry on both sides.

    The ``round(val_fraction * entries)`` entries with the lowest ``entry_rank`` go to
    validation (at least one, and at least one left for training, when there are two or more
    entries), so membership depends only on the set of entries and the seed, never on input
    order. Each side keeps the input order of its chains.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    entries = sorted({b.entry for b in backbones}, key=lambda e: (entry_rank(e, seed), e))
    n_val = round(val_fraction * len(entries))
    if len(entries) >= 2:
        n_val = min(max(n_val, 1), len(entries) - 1)
    validation = set(entries[:n_val])
    train = [b for b in backbones if b.entry not in validation]
    val = [b for b in backbones if b.entry in validation]
    return train, val
