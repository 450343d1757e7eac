"""Training data for denoising: which chains, in which order, cropped and noised how.

Every random choice about a chain (its crop window and its noise) comes from a generator
seeded by a number drawn for that chain in the *global* batch. So the examples do not depend
on how the global batch is split across processes or micro-batches: 2 ranks x batch B see
exactly the chains, crops and noise that 1 process x batch 2B sees.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from ..data import (
    Backbone,
    BackboneBatch,
    collate,
    load_embedded,
    load_sidechainnet,
    load_structure_dir,
    split_by_entry,
)
from ..data.batching import ATOMS_PER_RESIDUE, crop_window
from ..data.splits import entry_rank
from .config import SetupError, TrainConfig

_SEED_RANGE = 2**62


def load_backbones(config: TrainConfig) -> list[Backbone]:
    """Chains from the source the config names; missing or unreadable input is a SetupError."""
    try:
        if config.sidechainnet:
            backbones = load_sidechainnet(config.sidechainnet, splits=None,
                                          min_residues=config.min_residues)
            source = f"SidechainNet file {config.sidechainnet}"
        elif config.data:
            backbones = load_structure_dir(config.data, min_residues=config.min_residues,
                                           on_error="raise" if config.strict_data else "skip")
            source = f"structure folder {config.data}"
        else:
            backbones = load_embedded()
            source = "the embedded set"
    except (FileNotFoundError, ValueError) as error:
        raise SetupError(str(error)) from error
    backbones = [b for b in backbones if b.num_resolved >= config.min_residues]
    if len({b.entry for b in backbones}) < 2:
        raise SetupError(
            f"{source} has {len(backbones)} chains with >= {config.min_residues} resolved "
            "residues from fewer than 2 PDB entries; training and validation need one each"
        )
    return backbones


def split(backbones: list[Backbone], config: TrainConfig) -> tuple[list[Backbone], list[Backbone]]:
    """Train and validation chains, never sharing a PDB entry; validation capped and shuffled.

    The validation chains are ordered by a seeded hash of their id before capping, so a cap
    samples every protein family rather than the first files in the folder.
    """
    train, val = split_by_entry(backbones, config.val_fraction, seed=config.split_seed)
    val = sorted(val, key=lambda b: (entry_rank(b.id, config.split_seed), b.id))
    return train, val[: config.val_proteins]


def fingerprint(backbones: list[Backbone]) -> str:
    """A short digest of the chains' ids and lengths, to notice a changed data set on resume."""
    digest = hashlib.sha256()
    for backbone in backbones:
        digest.update(f"{backbone.id}:{len(backbone)};".encode())
    return digest.hexdigest()[:16]


class BatchOrder:
    """The data-order generator: an endless stream of shuffled epochs, cut into global batches.

    Each pick is a (chain index, example seed) pair. Batches run across epoch boundaries, so
    every global batch is full and gradient averages never change weight at an epoch's end.
    """

    def __init__(self, num_chains: int, seed: int):
        if num_chains < 1:
            raise ValueError("BatchOrder needs at least one chain")
        self.num_chains = num_chains
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.zeros(0, dtype=torch.long, device="cpu")  # data order: on the CPU
        self.cursor = 0
        self.epoch = 0

    def next(self, count: int) -> list[tuple[int, int]]:
        """The next ``count`` picks; identical on every rank that holds the same state."""
        picks: list[int] = []
        while len(picks) < count:
            if self.cursor == len(self.order):
                self.order = torch.randperm(self.num_chains, generator=self.generator, device="cpu")
                self.cursor = 0
                self.epoch += 1
            take = min(count - len(picks), len(self.order) - self.cursor)
            picks.extend(self.order[self.cursor : self.cursor + take].tolist())
            self.cursor += take
        seeds = torch.randint(0, _SEED_RANGE, (count,), generator=self.generator, device="cpu").tolist()
        return list(zip(picks, seeds))

    def state_dict(self) -> dict:
        return {"num_chains": self.num_chains, "generator": self.generator.get_state(),
                "order": self.order.clone(), "cursor": self.cursor, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of ``state_dict``; a state that cannot be this order's is a SetupError."""
        missing = [k for k in ("num_chains", "generator", "order", "cursor", "epoch")
                   if k not in state]
        if missing:
            raise SetupError(f"the checkpoint's data order has no {', '.join(missing)}")
        if state["num_chains"] != self.num_chains:
            raise SetupError(
                f"the checkpoint's data order is over {state['num_chains']} training chains, "
                f"this data set has {self.num_chains}"
            )
        order, cursor, epoch = state["order"], state["cursor"], state["epoch"]
        # an order is empty (before the first batch) or a permutation of the chains
        valid_order = isinstance(order, torch.Tensor) and (
            order.numel() == 0
            or torch.equal(order.sort().values, torch.arange(self.num_chains, device=order.device))
        )
        if not valid_order:
            raise SetupError(
                f"the checkpoint's data order is not a permutation of {self.num_chains} chains"
            )
        if not (isinstance(cursor, int) and 0 <= cursor <= len(order)):
            raise SetupError(
                f"the checkpoint's data-order cursor is {cursor!r}, expected 0..{len(order)}"
            )
        if not (isinstance(epoch, int) and epoch >= 0):
            raise SetupError(f"the checkpoint's data-order epoch is {epoch!r}, expected >= 0")
        try:
            self.generator.set_state(state["generator"])
        except (RuntimeError, TypeError) as error:
            raise SetupError(f"the checkpoint's data-order generator state is invalid: {error}")
        self.order = order.clone().long()
        self.cursor = cursor
        self.epoch = epoch


@dataclass
class NoisyBatch:
    """A padded batch with its noisy input coordinates, centred on the noisy centroid.

    ``batch.coords`` (truth) and ``noisy`` are shifted by the same ``offset`` per chain, which
    keeps float32/bf16 arithmetic near the origin and changes no RMSD; add ``offset`` back to
    return to the file's frame. ``chains`` are the cropped records (for sequences in PDB output).
    """

    batch: BackboneBatch
    noisy: torch.Tensor
    offset: torch.Tensor
    chains: list[Backbone]

    def to(self, device: torch.device) -> "NoisyBatch":
        return NoisyBatch(self.batch.to(device), self.noisy.to(device), self.offset.to(device),
                          self.chains)


def crop(backbone: Backbone, window: slice) -> Backbone:
    """The residues of ``window`` as a record of their own (the first starts its segment)."""
    breaks = backbone.chain_break[window].copy()
    breaks[:1] = False
    return Backbone(backbone.id, backbone.entry, backbone.sequence[window],
                    backbone.coords[window], backbone.atom_mask[window], breaks)


def make_batch(
    chains: list[Backbone], seeds: list[int], crop_residues: int, noise: float, dtype: torch.dtype
) -> NoisyBatch:
    """Crop each chain and add Gaussian noise (σ = ``noise`` Å) to its present atoms.

    Chain i's crop window and noise come from a generator seeded with ``seeds[i]`` alone.
    """
    cropped, noises = [], []
    for chain, seed in zip(chains, seeds):
        generator = torch.Generator().manual_seed(seed)
        piece = crop(chain, crop_window(len(chain), crop_residues, generator, chain.atom_mask.any(1)))
        cropped.append(piece)
        noises.append(noise * torch.randn(ATOMS_PER_RESIDUE * len(piece), 3, generator=generator, dtype=dtype,
                                          device="cpu"))
    batch = collate(cropped, crop_residues)
    truth = batch.coords.to(dtype)
    displacement = torch.zeros_like(truth)
    for i, values in enumerate(noises):
        displacement[i, : len(values)] = values
    mask = batch.mask[..., None]
    noisy = torch.where(mask, truth + displacement, truth)
    counts = batch.mask.sum(1).clamp(min=1).to(dtype)[:, None, None]
    offset = (noisy * mask).sum(1, keepdim=True) / counts
    batch.coords = torch.where(mask, truth - offset, truth)
    return NoisyBatch(batch, torch.where(mask, noisy - offset, noisy), offset, cropped)
