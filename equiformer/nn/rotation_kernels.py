"""Which kernel computes a batched frame rotation ``(E, R, R) @ (E, R, C)``.

CPU batched GEMMs with large matrices and few output columns are faster computed transposed,
``(x^T D^T)^T``, with a copy back: so rotations with at least ``TRANSPOSED_MIN_ROWS`` rows and at
most ``TRANSPOSED_MAX_CHANNELS`` channels take that route on the CPU.  The thresholds come from
``benchmarks/rotation_products.py`` (numbers in benchmarks/RESULTS.md, "Narrow rotations are
computed transposed"); rerun it to retune them on other hardware.
"""
from __future__ import annotations

import torch
from torch import Tensor

TRANSPOSED_MIN_ROWS, TRANSPOSED_MAX_CHANNELS = 13, 8


def transposed_product(d: Tensor, x: Tensor) -> Tensor:
    """``d @ x`` for ``d`` (E, R, R) and ``x`` (E, R, C), computed as ``(x^T d^T)^T``: a
    non-contiguous (E, R, C) view."""
    return torch.bmm(x.transpose(1, 2), d.transpose(1, 2)).transpose(1, 2)


def apply_rotation(d: Tensor, x: Tensor) -> Tensor:
    """``d @ x`` for ``d`` (E, R, R) and ``x`` (E, R, C) by the faster kernel for its shape and
    device; the result may be non-contiguous."""
    rows, channels = x.shape[-2:]
    if rows >= TRANSPOSED_MIN_ROWS and channels <= TRANSPOSED_MAX_CHANNELS and x.device.type == "cpu":
        return transposed_product(d, x)
    return d @ x


__all__ = ["TRANSPOSED_MAX_CHANNELS", "TRANSPOSED_MIN_ROWS", "apply_rotation", "transposed_product"]
