"""The denoising task: the network's type-1 output is the displacement back to the truth.

Denoised = noisy + σ · type1, where σ is the noise level: the network's output is in units
of the noise, so its natural O(1) scale fits any ``--noise``. The loss is the mean over
chains of each chain's mean squared deviation (Å²) over its real atoms; averaging per chain
first makes the loss of a global batch a plain mean over chains, which is what lets
data-parallel ranks and micro-batches add up to exactly the single-process loss.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from ..data import NUM_BACKBONE_TOKENS
from .config import ConfigError, TrainConfig
from .data import NoisyBatch


def build_model(config: TrainConfig) -> nn.Module:
    """An Equiformer over backbone-atom tokens that sees covalent bonds and nearest atoms.

    A single value of ``dim``, ``heads`` or ``dim_head`` applies to every degree.
    """
    from .. import Equiformer

    def per_degree(values: tuple[int, ...]) -> tuple[int, ...]:
        return values * config.num_degrees if len(values) == 1 else values

    try:
        return Equiformer(
            num_tokens=NUM_BACKBONE_TOKENS,
            dim=per_degree(config.dim),
            num_degrees=config.num_degrees,
            heads=per_degree(config.heads),
            dim_head=per_degree(config.dim_head),
            depth=config.depth,
            num_neighbors=config.num_neighbors,
            valid_radius=config.valid_radius,
            reduce_dim_out=True,
            attend_sparse_neighbors=config.adj_degrees > 0,
            num_adj_degrees_embed=config.adj_degrees or None,
            l2_dist_attention=config.attention == "l2",
        )
    except ValueError as error:
        raise ConfigError(f"the model settings do not fit together: {error}") from error


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (matmuls in bf16; softmax, norms and reductions stay fp32)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def bf16_problem(model: nn.Module, example: NoisyBatch) -> str | None:
    """Why ``model`` cannot run under bf16 autocast (one forward pass), or None if it can.

    ``--precision auto`` asks this before choosing bf16, so that a model with an operation
    autocast cannot handle falls back to fp32 instead of failing at the first step.
    """
    try:
        with torch.no_grad():
            denoise(model, example, 1.0, "bf16")
    except RuntimeError as error:
        return f"{type(error).__name__}: {error}"
    return None


def denoise(model: nn.Module, example: NoisyBatch, noise: float, precision: str) -> Tensor:
    """Denoised coordinates (b, n, 3) in the dtype of the inputs, whatever the autocast."""
    batch = example.batch
    with autocast(example.noisy.device, precision):
        out = model(batch.tokens, example.noisy, batch.mask, batch.adj_mat)
    return example.noisy + noise * out.type1.to(example.noisy.dtype)


def squared_deviation(coords: Tensor, truth: Tensor, mask: Tensor) -> Tensor:
    """Per chain (b,): mean over real atoms of the squared distance to the truth, in Å²."""
    squared = ((coords - truth) ** 2).sum(-1) * mask
    return squared.sum(-1) / mask.sum(-1).clamp(min=1)


def rmsd(coords: Tensor, truth: Tensor, mask: Tensor) -> Tensor:
    """Per chain (b,): backbone RMSD (Å) over real N, CA, C, O atoms, in the common frame.

    No superposition: noisy and denoised coordinates share the truth's frame, and the
    equivariant network cannot rotate its prediction away from it.
    """
    return squared_deviation(coords, truth, mask).sqrt()
