"""Data-parallel plumbing: who am I (rank), how many are we, and the few collectives we need.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them (or with a world
of one) everything here degrades to no-ops, so the training code has a single path.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job: rank 0 alone writes files and shows progress."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_env() -> DistContext:
    """Read the torchrun environment; a plain ``python denoise.py`` is rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    return DistContext(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def init_process_group(ctx: DistContext, device: torch.device) -> None:
    """NCCL between GPUs, gloo between CPU processes; nothing for a single process."""
    if not ctx.enabled or dist.is_initialized():
        return
    if device.type == "cuda":
        dist.init_process_group("nccl", rank=ctx.rank, world_size=ctx.world_size, device_id=device)
    else:
        dist.init_process_group("gloo", rank=ctx.rank, world_size=ctx.world_size)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """DistributedDataParallel averages gradients across ranks during ``backward``.

    Buffers are not re-sent before each forward pass: the model's buffers are constant index
    tables, identical on every rank. (torch 2.13 renamed ``broadcast_buffers`` to
    ``forward_sync_buffers``; older versions know only the first.)
    """
    if not ctx.enabled:
        return model
    ddp = nn.parallel.DistributedDataParallel
    flag = "forward_sync_buffers"
    if flag not in inspect.signature(ddp).parameters:
        flag = "broadcast_buffers"
    device_ids = [device] if device.type == "cuda" else None
    return ddp(model, device_ids=device_ids, **{flag: False})


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Element-wise sum over ranks (in place, and returned); identity on one process."""
    if ctx.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def sum_gradients(module: nn.Module, ctx: DistContext) -> None:
    """Replace every parameter's gradient by its sum over ranks, in one collective.

    The explicit alternative to ``wrap_model``'s DDP for a loss whose gradient is taken twice
    (forces = -dE/dr inside the forward pass) or whose forward runs more than once per step:
    with each rank's loss already divided by the *global* batch's counts, the sum is the
    gradient of the global loss. A parameter without a gradient counts as zeros. Identity on
    one process, except that missing gradients become zeros there too (so that the optimizer
    steps the same parameters however many processes there are).
    """
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if not ctx.enabled:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params])  # (P,) one message, not one per tensor
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    for p, summed in zip(params, flat.split([p.numel() for p in params])):
        p.grad.copy_(summed.view_as(p))


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def parameter_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter's bytes: equal digests mean bitwise-equal weights."""
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def gather_digests(model: nn.Module, ctx: DistContext) -> list[str]:
    """Every rank's ``parameter_digest``, in rank order: the proof that ranks stayed in sync."""
    mine = parameter_digest(model)
    if not ctx.enabled:
        return [mine]
    everyone: list[str] = [""] * ctx.world_size
    dist.all_gather_object(everyone, mine)
    return everyone
