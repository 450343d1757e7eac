"""Bookkeeping for the flat (l, m) axis: degree-major, ``m = -l..l`` within a degree."""
from __future__ import annotations


def num_harmonics(lmax: int) -> int:
    """Number of (l, m) components for degrees ``0..lmax``: ``(lmax + 1)^2``."""
    return (lmax + 1) ** 2


def degree_slice(l: int) -> slice:
    """Where degree ``l`` lives on the flat (l, m) axis."""
    return slice(l * l, (l + 1) ** 2)
