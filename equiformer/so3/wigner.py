"""Wigner-D matrices of real spherical harmonics, computed from 3x3 rotation matrices.

Degree 1 in our basis is the Cartesian rotation itself.  Higher degrees follow from the exact
recursion ``D^l = C^T (D^{l-1} (x) D^1) C`` with ``C`` the (l-1) x 1 -> l Clebsch-Gordan coupling
scaled to orthonormal columns.  Every entry is therefore a polynomial of degree ``l`` in the
entries of ``R``: no Euler angles, no gimbal lock, no ``matrix_exp``, and gradients with respect to
``R`` are exact everywhere.  For an improper ``R`` (det -1) the same polynomials give the O(3)
representation with parity ``(-1)^l``, i.e. ``Y(R x) = D(R) Y(x)`` still holds.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from .clebsch_gordan import clebsch_gordan


@lru_cache(maxsize=None)
def _coupling(l: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(l-1) x 1 -> l coupling with orthonormal columns, flattened to ``((2l-1) * 3, 2l+1)``;
    built once per (l, dtype, device), since every forward pass needs it (never modified)."""
    c = clebsch_gordan(l - 1, 1, l, dtype=torch.float64) * math.sqrt(2 * l + 1)
    return c.reshape((2 * l - 1) * 3, 2 * l + 1).to(dtype=dtype, device=device)


def wigner_D(lmax: int, rotation: Tensor) -> list[Tensor]:
    """Per-degree Wigner-D blocks ``[D^0, D^1, ..., D^lmax]``, ``D^l`` of shape ``(..., 2l+1, 2l+1)``.

    Satisfies ``spherical_harmonics(l, x @ R.T) == spherical_harmonics(l, x) @ D^l(R).T``.
    """
    if lmax < 0:
        raise ValueError(f"lmax must be >= 0, got {lmax}")
    if rotation.shape[-2:] != (3, 3):
        raise ValueError(f"rotation must have shape (..., 3, 3), got {tuple(rotation.shape)}")
    batch = rotation.shape[:-2]
    r = rotation.reshape(-1, 3, 3)  # (B, 3, 3)
    blocks = [torch.ones(r.shape[0], 1, 1, dtype=r.dtype, device=r.device)]
    if lmax >= 1:
        blocks.append(r)
    for l in range(2, lmax + 1):
        c = _coupling(l, r.dtype, r.device)  # ((2l-1)*3, 2l+1), rows ordered (a, b)
        prev = blocks[-1]  # (B, 2l-1, 2l-1)
        n_prev, n = 2 * l - 1, 2 * l + 1
        # contract the right index of D^{l-1} with C: (B, a, (b', n)) with a' summed
        x = prev @ c.reshape(n_prev, 3 * n)  # (B, 2l-1, 3 * (2l+1))
        # contract the right index of D^1: for every a, R @ X[a] over b'
        x = x.reshape(-1, n_prev, 3, n).transpose(1, 2).reshape(-1, 3, n_prev * n)  # (B, 3, a*n)
        x = (r @ x).reshape(-1, 3, n_prev, n).transpose(1, 2).reshape(-1, n_prev * 3, n)  # (B, (a,b), n)
        blocks.append(c.transpose(0, 1) @ x)  # (B, 2l+1, 2l+1)
    return [b.reshape(*batch, *b.shape[-2:]) for b in blocks]


def block_diagonal(blocks: list[Tensor]) -> Tensor:
    """Assemble per-degree blocks ``(..., 2l+1, 2l+1)`` into one ``(..., (L+1)^2, (L+1)^2)`` matrix."""
    size = sum(b.shape[-1] for b in blocks)
    batch = blocks[0].shape[:-2]
    out = blocks[0].new_zeros(*batch, size, size)
    start = 0
    for b in blocks:
        end = start + b.shape[-1]
        out[..., start:end, start:end] = b
        start = end
    return out


def wigner_D_block_diagonal(lmax: int, rotation: Tensor) -> Tensor:
    """All degrees ``0..lmax`` at once: ``(..., (lmax+1)^2, (lmax+1)^2)`` block-diagonal matrix."""
    return block_diagonal(wigner_D(lmax, rotation))
