"""Real spherical harmonics in e3nn's basis.

Convention (fixed once, see README): the polar axis is ``y`` and the azimuth runs in the
``z, x`` plane, so degree 1 is ``(x, y, z)`` itself and every Wigner-D block of degree 1 is the
Cartesian rotation matrix.  Within a degree, index ``l + m`` holds ``cos(m phi)`` terms for
``m > 0`` and ``sin(|m| phi)`` terms for ``m < 0``, without the Condon-Shortley phase.

Normalisations:
  * ``"component"`` (default): ``sum_m Y_lm(u)^2 = 2l + 1`` on the unit sphere,
  * ``"integral"``: orthonormal on the sphere, ``int Y_lm^2 = 1``,
  * ``"norm"``: ``sum_m Y_lm(u)^2 = 1``.

The harmonics are evaluated as homogeneous (solid) polynomials of the normalised vector, so the
zero vector maps to ``Y_0`` (its constant: 1 for ``"component"`` and ``"norm"``, ``1/sqrt(4 pi)`` for
``"integral"``) and ``Y_l = 0`` for ``l > 0``, with finite gradients.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

NORMALIZATIONS = ("component", "integral", "norm")


@lru_cache(maxsize=None)
def _prefactors(lmax: int, normalization: str) -> tuple[tuple[float, ...], ...]:
    """Exact normalisation constants, per degree, indexed by m >= 0 (float64 from integers)."""
    out = []
    for l in range(lmax + 1):
        row = []
        for m in range(l + 1):
            # sqrt(2 (l-m)!/(l+m)!) for m > 0, 1 for m = 0 ("component" up to sqrt(2l+1))
            ratio = math.factorial(l - m) / math.factorial(l + m)
            value = math.sqrt((2 if m > 0 else 1) * ratio)
            if normalization == "component":
                value *= math.sqrt(2 * l + 1)
            elif normalization == "integral":
                value *= math.sqrt((2 * l + 1) / (4 * math.pi))
            row.append(value)
        out.append(tuple(row))
    return tuple(out)


def safe_unit(vectors: Tensor) -> tuple[Tensor, Tensor]:
    """``(v / |v|, |v|^2 > 0)``: zero vectors (and those whose square underflows) stay at zero.

    The double ``where`` keeps gradients finite at the zero vector.
    """
    norm_sq = (vectors * vectors).sum(dim=-1, keepdim=True)
    nonzero = norm_sq > 0
    norm = torch.sqrt(torch.where(nonzero, norm_sq, torch.ones_like(norm_sq)))
    return torch.where(nonzero, vectors / norm, torch.zeros_like(vectors)), nonzero[..., 0]


def spherical_harmonics(
    lmax: int,
    vectors: Tensor,
    normalize: bool = True,
    normalization: str = "component",
) -> Tensor:
    """Real spherical harmonics of every degree ``0..lmax``, concatenated.

    Args:
        lmax: highest degree, any non-negative integer.
        vectors: ``(..., 3)`` Cartesian vectors.
        normalize: evaluate on ``v / |v|`` (angular part only); otherwise the solid harmonics
            ``|v|^l Y_l(v / |v|)``.
        normalization: ``"component"``, ``"integral"`` or ``"norm"`` (see module docstring).

    Returns:
        ``(..., (lmax + 1) ** 2)``, degree-major, ``m = -l..l`` within a degree.
    """
    if lmax < 0:
        raise ValueError(f"lmax must be >= 0, got {lmax}")
    if vectors.shape[-1:] != (3,):
        raise ValueError(f"vectors must have shape (..., 3), got {tuple(vectors.shape)}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")

    u = safe_unit(vectors)[0] if normalize else vectors
    # e3nn's frame: polar axis y; the azimuthal plane is spanned by (z, x).
    x, y, z = u.unbind(-1)
    axial, a, b = y, z, x
    r2 = x * x + y * y + z * z  # 1 on the sphere, 0 for the zero vector

    # cos_m + i sin_m = (a + i b)^m carries the azimuthal dependence times sin(theta)^m.
    cos_m, sin_m = [torch.ones_like(a)], [torch.zeros_like(a)]
    for _ in range(lmax):
        c, s = cos_m[-1], sin_m[-1]
        cos_m.append(a * c - b * s)
        sin_m.append(a * s + b * c)

    # legendre[l][m] = d^m P_l / dz^m as a homogeneous polynomial (solid form).
    legendre: list[list[Tensor]] = [[] for _ in range(lmax + 1)]
    for m in range(lmax + 1):
        diag = torch.full_like(a, float(math.prod(range(1, 2 * m, 2))))  # (2m-1)!!
        legendre[m].append(diag)
        if m + 1 <= lmax:
            legendre[m + 1].append((2 * m + 1) * axial * diag)
        for l in range(m + 2, lmax + 1):
            prev, prev2 = legendre[l - 1][m], legendre[l - 2][m]
            legendre[l].append(((2 * l - 1) * axial * prev - (l + m - 1) * r2 * prev2) / (l - m))

    norms = _prefactors(lmax, normalization)
    blocks = []
    for l in range(lmax + 1):
        row = [norms[l][-m] * legendre[l][-m] * sin_m[-m] for m in range(-l, 0)]
        row.append(norms[l][0] * legendre[l][0])
        row += [norms[l][m] * legendre[l][m] * cos_m[m] for m in range(1, l + 1)]
        blocks.extend(row)
    return torch.stack(blocks, dim=-1)
