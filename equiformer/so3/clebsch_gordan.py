"""Real Clebsch-Gordan coefficients (Wigner 3j tensors) in the basis of ``spherical_harmonics``.

Computed once per ``(l1, l2, l3)``: the complex Condon-Shortley coefficients come from Racah's
formula in exact rational arithmetic (each is ``sign * sqrt(fraction)``), then a fixed unitary
change of basis takes them to the real harmonics.  The float64 result is cached in memory and
callers receive copies in their own dtype and device.

Normalisation and sign match e3nn's ``wigner_3j``: the tensor has unit Frobenius norm, and the
complex-to-real basis carries a phase ``i^l`` per degree, which makes every coefficient real.
"""
from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import torch
from torch import Tensor

from .constants import outside_transforms


def _check_triangle(l1: int, l2: int, l3: int) -> None:
    if min(l1, l2, l3) < 0:
        raise ValueError(f"degrees must be >= 0, got ({l1}, {l2}, {l3})")
    if not abs(l1 - l2) <= l3 <= l1 + l2:
        raise ValueError(f"degrees ({l1}, {l2}, {l3}) violate the triangle rule |l1-l2| <= l3 <= l1+l2")


@lru_cache(maxsize=None)
def _complex_cg(j1: int, m1: int, j2: int, m2: int, j: int, m: int) -> float:
    """<j1 m1 j2 m2 | j m> by Racah's formula; exact up to one final square root."""
    if m1 + m2 != m or abs(m1) > j1 or abs(m2) > j2 or abs(m) > j:
        return 0.0
    f = math.factorial
    prefactor = Fraction(
        (2 * j + 1) * f(j + j1 - j2) * f(j - j1 + j2) * f(j1 + j2 - j),
        f(j1 + j2 + j + 1),
    ) * (f(j + m) * f(j - m) * f(j1 - m1) * f(j1 + m1) * f(j2 - m2) * f(j2 + m2))
    series = Fraction(0)
    for k in range(0, j1 + j2 - j + 1):
        denominators = (
            k,
            j1 + j2 - j - k,
            j1 - m1 - k,
            j2 + m2 - k,
            j - j2 + m1 + k,
            j - j1 - m2 + k,
        )
        if min(denominators) < 0:
            continue
        series += Fraction((-1) ** k, math.prod(f(d) for d in denominators))
    if series == 0:
        return 0.0
    magnitude = math.sqrt(prefactor * series * series)
    return magnitude if series > 0 else -magnitude


def _real_from_complex(l: int) -> list[list[complex]]:
    """Rows: real harmonics (m = -l..l); columns: complex harmonics Y_l^m (Condon-Shortley).

    Y_{l,m>0} = (Y_l^{-m} + (-1)^m Y_l^m) / sqrt2,  Y_{l,m<0} = i (Y_l^{m} - (-1)^m Y_l^{-m}) / sqrt2,
    all times i^l so that the coupling coefficients come out real.
    """
    s = 1 / math.sqrt(2)
    phase = 1j**l
    u = [[0j] * (2 * l + 1) for _ in range(2 * l + 1)]
    u[l][l] = phase
    for m in range(1, l + 1):
        u[l + m][l - m] = phase * s
        u[l + m][l + m] = phase * s * (-1) ** m
        u[l - m][l - m] = phase * 1j * s
        u[l - m][l + m] = phase * -1j * s * (-1) ** m
    return u


@lru_cache(maxsize=None)
def _real_cg_float64(l1: int, l2: int, l3: int) -> Tensor:
    with outside_transforms():  # a cached tensor: plain even when first asked for under torch.func
        return _build_real_cg(l1, l2, l3)


def _build_real_cg(l1: int, l2: int, l3: int) -> Tensor:
    _check_triangle(l1, l2, l3)
    u1, u2, u3 = _real_from_complex(l1), _real_from_complex(l2), _real_from_complex(l3)
    # each real harmonic mixes at most two complex ones: keep the nonzero (m, coefficient) pairs
    sparse = [
        [[(k - l, z) for k, z in enumerate(row) if z] for row in u]
        for l, u in ((l1, u1), (l2, u2), (l3, u3))
    ]
    out = torch.zeros(2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1, dtype=torch.float64, device="cpu")  # the cached master
    for a, row_a in enumerate(sparse[0]):
        for b, row_b in enumerate(sparse[1]):
            for c, row_c in enumerate(sparse[2]):
                # couple Y_real(a) Y_real(b) into Y_real(c): U1 U2 conj(U3) applied to the complex CG
                total = sum(
                    za * zb * zc.conjugate() * _complex_cg(l1, m1, l2, m2, l3, m3)
                    for m1, za in row_a
                    for m2, zb in row_b
                    for m3, zc in row_c
                    if m1 + m2 == m3
                )
                if abs(total.imag) > 1e-12:
                    raise AssertionError("real basis change left an imaginary coefficient")
                out[a, b, c] = total.real
    out /= out.norm()
    out[out.abs() < 1e-15] = 0.0  # exact zeros where the selection rules demand them
    return out


def clebsch_gordan(
    l1: int,
    l2: int,
    l3: int,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Real coupling tensor ``C[a, b, c]`` of shape ``(2l1+1, 2l2+1, 2l3+1)``, unit Frobenius norm.

    ``C`` is invariant: ``einsum('abc,ai,bj,ck->ijk', C, D1, D2, D3) == C`` for Wigner-D blocks of
    any rotation.  Returns a fresh tensor; the float64 master copy stays cached.
    """
    dtype = dtype or torch.get_default_dtype()
    return _real_cg_float64(l1, l2, l3).to(dtype=dtype, device=device, copy=True)
