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
from collections.abc import Sequence
from functools import lru_cache

import torch
from torch import Tensor

from .clebsch_gordan import clebsch_gordan
from .constants import outside_transforms


@lru_cache(maxsize=None)
def _coupling(l: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(l-1) x 1 -> l coupling with orthonormal columns, flattened to ``((2l-1) * 3, 2l+1)``;
    built once per (l, dtype, device), since every forward pass needs it (never modified)."""
    with outside_transforms():
        c = clebsch_gordan(l - 1, 1, l, dtype=torch.float64) * math.sqrt(2 * l + 1)
        return c.reshape((2 * l - 1) * 3, 2 * l + 1).to(dtype=dtype, device=device)


# edges per chunk, so that a chunk's intermediates (3 (2l-1)(2l+1) floats per edge: 7 MB per
# chunk at l = 6) stay in the last-level cache; the speed-up is in benchmarks/RESULTS.md
_EDGE_CHUNK = 4096


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
    if lmax < 2 or r.shape[0] <= _EDGE_CHUNK or r.device.type != "cpu":  # chunks: a CPU cache matter
        blocks = _wigner_chunk(lmax, r)
    else:
        chunks = [_wigner_chunk(lmax, r[i : i + _EDGE_CHUNK]) for i in range(0, r.shape[0], _EDGE_CHUNK)]
        blocks = [torch.cat(parts) for parts in zip(*chunks)]
    return [b.reshape(*batch, *b.shape[-2:]) for b in blocks]


def _wigner_chunk(lmax: int, r: Tensor) -> list[Tensor]:
    """``wigner_D`` of rotations ``(B, 3, 3)``.

    ``D^l[m, n] = sum C[(a, b), m] D^{l-1}[a, a'] R[b, b'] C[(a', b'), n]``, evaluated with the
    batch as the last, contiguous axis: both contractions with the fixed ``C`` are then plain
    matrix products over all rotations at once, and the one with ``R`` is element-wise over
    whole batch vectors (no per-rotation 3x3 products, no transposed copies).
    """
    b = r.shape[0]
    blocks = [torch.ones(b, 1, 1, dtype=r.dtype, device=r.device)]
    if lmax >= 1:
        blocks.append(r)
    if lmax < 2:
        return blocks
    rs = r.permute(1, 2, 0).contiguous()  # (3, 3, B): R[b, b'] as batch vectors
    x = rs  # D^{l-1}[a, a', B], starting from D^1 = R
    for l in range(2, lmax + 1):
        p, n = 2 * l - 1, 2 * l + 1
        c = _coupling(l, r.dtype, r.device).view(p, 3, n)  # C[a, b, m]
        # Q[m, b, a', B] = sum_a C[a, b, m] D^{l-1}[a, a', B]
        q = (c.permute(2, 1, 0).reshape(n * 3, p) @ x.reshape(p, p * b)).view(n, 3, p, b)
        # P[m, a', b', B] = sum_b Q[m, b, a', B] R[b, b', B]
        pr = torch.stack([q[:, 0] * rs[0, j] + q[:, 1] * rs[1, j] + q[:, 2] * rs[2, j] for j in range(3)], dim=2)  # (n, p, 3, B)
        # D^l[m, n', B] = sum_{(a', b')} P[m, (a', b'), B] C[(a', b'), n']
        x = torch.matmul(c.reshape(p * 3, n).T, pr.reshape(n, p * 3, b))  # (n, n, B)
        blocks.append(x.permute(2, 0, 1).contiguous())  # (B, 2l+1, 2l+1)
    return blocks


_GATHER_INDEX: dict[tuple, Tensor] = {}


def _permuted_index(sizes: tuple[int, ...], row_order: tuple[int, ...], device: torch.device) -> Tensor:
    """Where each entry of ``block_diagonal`` of square blocks of ``sizes``, rows permuted by
    ``row_order``, comes from in ``[block_0.flatten(), block_1.flatten(), ..., 0]``: a flat
    ``(R * R,)`` index on ``device``, made once per (sizes, order, device) and kept in a plain dict
    (``torch.compile`` traces through it, unlike ``functools.lru_cache``); no per-forward rebuild
    or host-to-device copy."""
    key = (sizes, row_order, device)
    if key not in _GATHER_INDEX:
        with outside_transforms():
            entries = sum(n * n for n in sizes)
            index = torch.full((sum(sizes), sum(sizes)), entries, dtype=torch.long, device="cpu")  # the 0 entry
            first = column = 0
            for n in sizes:
                index[first : first + n, first : first + n] = column + torch.arange(n * n, device="cpu").view(n, n)
                first, column = first + n, column + n * n
            _GATHER_INDEX[key] = index[list(row_order)].flatten().to(device)
    return _GATHER_INDEX[key]


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


def permuted_block_diagonal(blocks: list[Tensor], row_order: Sequence[int]) -> Tensor:
    """``block_diagonal(blocks)[..., row_order, :]`` as one gather from all block entries and a
    zero, without the intermediate matrix (its zero fill, block copies and row gather)."""
    batch = blocks[0].shape[:-2]
    sizes = tuple(b.shape[-1] for b in blocks)
    flat = torch.cat([b.reshape(*batch, n * n) for b, n in zip(blocks, sizes)] + [blocks[0].new_zeros(*batch, 1)], dim=-1)
    index = _permuted_index(sizes, tuple(int(r) for r in row_order), flat.device)  # (R' * R,)
    return flat.index_select(-1, index).view(*batch, len(row_order), sum(sizes))


def wigner_D_block_diagonal(lmax: int, rotation: Tensor) -> Tensor:
    """All degrees ``0..lmax`` at once: ``(..., (lmax+1)^2, (lmax+1)^2)`` block-diagonal matrix."""
    return block_diagonal(wigner_D(lmax, rotation))
