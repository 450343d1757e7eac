"""Validation on held-out chains with noise fixed once per seed, so every evaluation is comparable.

The crops and noise are drawn once, when the run starts, from the seed; each evaluation then
denoises the very same noisy chains. Chunks of the set are shared out across ranks and the
sums are all-reduced, so the numbers do not depend on the number of processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..data import Backbone, write_pdb
from .config import TrainConfig
from .data import NoisyBatch, make_batch
from .distributed import DistContext, all_reduce_sum
from .files import atomic_path
from .objective import denoise, rmsd

EXAMPLE_NAME = "validation_example.pdb"
VAL_CHUNK = 8
"""Chains per validation forward pass, fixed so that results do not depend on --batch-size."""

_VAL_SEED_SALT = 0x5EED_0F_7A1


@dataclass
class ValidationResult:
    rmsd_noisy: float
    rmsd_denoised: float
    chains: int
    example: dict[str, torch.Tensor] | None
    """Truth, noisy and denoised (L, 4, 3) coordinates of the first chain (on rank 0 only)."""
    example_chain: Backbone | None


def build_validation_set(
    chains: list[Backbone], config: TrainConfig, dtype: torch.dtype
) -> list[NoisyBatch]:
    """Fixed crops and noise for ``chains``, drawn from ``config.seed``, in chunks."""
    generator = torch.Generator().manual_seed(config.seed ^ _VAL_SEED_SALT)
    seeds = torch.randint(0, 2**62, (len(chains),), generator=generator, device="cpu").tolist()
    return [
        make_batch(chains[i : i + VAL_CHUNK], seeds[i : i + VAL_CHUNK], config.crop, config.noise,
                   dtype)
        for i in range(0, len(chains), VAL_CHUNK)
    ]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    chunks: list[NoisyBatch],
    config: TrainConfig,
    precision: str,
    device: torch.device,
    ctx: DistContext,
) -> ValidationResult:
    """Mean over chains of the backbone RMSD (Å) of the noisy and the denoised coordinates."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    example, example_chain = None, None
    for index in range(ctx.rank, len(chunks), ctx.world_size):
        chunk = chunks[index].to(device)
        batch = chunk.batch
        denoised = denoise(model, chunk, config.noise, precision)
        totals[0] += rmsd(chunk.noisy, batch.coords, batch.mask).sum().double()
        totals[1] += rmsd(denoised, batch.coords, batch.mask).sum().double()
        totals[2] += len(chunk.chains)
        if index == 0:
            example_chain = chunk.chains[0]
            example = _first_chain(chunk, denoised, len(example_chain))
    model.train(was_training)
    all_reduce_sum(totals, ctx)
    count = max(int(totals[2].item()), 1)
    return ValidationResult(totals[0].item() / count, totals[1].item() / count,
                            int(totals[2].item()), example, example_chain)


def _first_chain(chunk: NoisyBatch, denoised: torch.Tensor, length: int) -> dict[str, torch.Tensor]:
    """The first chain's coordinates back in its file's frame, as (L, 4, 3) per model."""
    frames = {"truth": chunk.batch.coords, "noisy": chunk.noisy, "denoised": denoised}
    return {
        name: (coords[0] + chunk.offset[0]).reshape(-1, 4, 3)[:length].float().cpu()
        for name, coords in frames.items()
    }


def write_example(result: ValidationResult, folder: Path) -> Path | None:
    """``validation_example.pdb``: truth, noisy and denoised as MODELs 1-3 of one chain."""
    if result.example is None or result.example_chain is None:
        return None
    chain = result.example_chain
    path = folder / EXAMPLE_NAME
    with atomic_path(path) as temporary:
        write_pdb(temporary, result.example, chain.sequence, atom_mask=chain.atom_mask)
    return path
