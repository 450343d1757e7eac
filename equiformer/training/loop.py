"""Denoising's training step, validation and session, run by the shared loop (``fit``).

One optimizer step consumes one *global* batch (``batch_size x accumulate x world_size``
chains) drawn by ``BatchOrder``; rank r takes its own slice of each micro-batch, and the loss
is scaled so that DistributedDataParallel's gradient average equals the gradient of the mean
over the whole global batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..data import Backbone
from .config import TrainConfig
from .data import BatchOrder, NoisyBatch, make_batch
from .distributed import DistContext
from .fit import Plan, Step, TrainWindow, loop_state
from .fit import fit as fit_task
from .interrupt import StopRequest
from .metrics import CURVES_NAME, MetricsLog
from .objective import denoise, squared_deviation
from .validation import ValidationResult, evaluate, write_example


@dataclass
class Session:
    """Everything one training process holds; the checkpoint is its resumable part."""

    config: TrainConfig
    ctx: DistContext
    device: torch.device
    precision: str
    dtype: torch.dtype
    model: nn.Module
    """The model to train with: DistributedDataParallel-wrapped when there are several ranks."""
    module: nn.Module
    """The bare model, for saving and validation."""
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    order: BatchOrder
    train_chains: list[Backbone]
    val_chunks: list[NoisyBatch]
    out: Path
    metrics: MetricsLog
    data_fingerprint: str
    val_fingerprint: str = ""
    """``fingerprint`` of the validation chains: a resumed run must validate on the same ones."""
    step: int = 0
    elapsed: float = 0.0
    """Training seconds of earlier invocations of this run."""
    window: TrainWindow = dataclasses.field(default_factory=TrainWindow)
    """Steps since the last full ``train`` record; checkpointed, so that a resumed run logs
    exactly the records (same steps, same mean losses) of an uninterrupted one."""
    validation_due: bool = False
    """The validation of ``step`` was skipped (a stop request): ``fit`` runs it first."""

    def checkpoint_state(self) -> dict:
        """The resumable state, as tensors and primitives only."""
        return {**loop_state(self, self.module), "val_fingerprint": self.val_fingerprint}

    def say(self, message: str) -> None:
        """Print on rank 0 without breaking the progress bar."""
        if self.ctx.is_main:
            from tqdm import tqdm

            tqdm.write(message)


def train_step(session: Session) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step; returns this rank's summed per-chain loss and the gradient norm."""
    config, ctx = session.config, session.ctx
    picks = session.order.next(config.per_rank_batch * ctx.world_size)
    local_sum = torch.zeros((), dtype=torch.float64, device=session.device)
    for micro in range(config.accumulate):
        start = (micro * ctx.world_size + ctx.rank) * config.batch_size
        mine = picks[start : start + config.batch_size]
        example = make_batch(
            [session.train_chains[index] for index, _ in mine], [seed for _, seed in mine],
            config.crop, config.noise, session.dtype,
        ).to(session.device)
        last = micro == config.accumulate - 1
        no_sync = getattr(session.model, "no_sync", None)
        with contextlib.nullcontext() if last or no_sync is None else no_sync():
            denoised = denoise(session.model, example, config.noise, session.precision)
            per_chain = squared_deviation(denoised, example.batch.coords, example.batch.mask)
            (per_chain.sum() / config.per_rank_batch).backward()
        local_sum += per_chain.detach().sum().double()
    max_norm = config.clip_grad if config.clip_grad > 0 else math.inf
    grad_norm = nn.utils.clip_grad_norm_(session.module.parameters(), max_norm)
    session.optimizer.step()
    session.scheduler.step()
    session.optimizer.zero_grad(set_to_none=True)
    return local_sum, grad_norm


def validate(session: Session) -> ValidationResult:
    """Evaluate on the fixed validation set; rank 0 logs it and writes the PDB and the plot."""
    result = evaluate(session.module, session.val_chunks, session.config, session.precision,
                      session.device, session.ctx)
    session.validation_due = False
    if session.ctx.is_main:
        session.metrics.write(kind="val", step=session.step, rmsd_noisy=result.rmsd_noisy,
                              rmsd_denoised=result.rmsd_denoised, chains=result.chains)
        write_example(result, session.out)
        session.metrics.plot(session.out / CURVES_NAME)
        session.say(f"step {session.step}: validation backbone RMSD noisy "
                    f"{result.rmsd_noisy:.3f} Å -> denoised {result.rmsd_denoised:.3f} Å "
                    f"({result.chains} chains)")
    return result


@dataclass
class DenoiseTask:
    """Denoising as ``fit``'s task.  It calls this module's ``train_step`` and ``validate``
    by name, so that tests can wrap them."""

    session: Session

    @property
    def plan(self) -> Plan:
        config, ctx = self.session.config, self.session.ctx
        return Plan(
            steps=config.steps,
            end=min(config.steps, config.stop_at_step) if config.stop_at_step else config.steps,
            log_every=config.log_every, validate_every=config.val_every,
            save_every=config.checkpoint_every,
            diverged_hint="lower --lr (or --noise), or check the data",
            bar="denoise" if ctx.is_main and config.progress else None,
        )

    def train_step(self) -> Step:
        local_sum, grad_norm = train_step(self.session)
        chains = self.session.config.per_rank_batch * self.session.ctx.world_size
        return Step(local_sum, grad_norm, lambda sums: float(sums[0]) / chains)

    def validate(self) -> None:
        validate(self.session)

    def record_line(self, mean: float, lr: float) -> None:
        return None  # the progress bar shows the loss


def fit(session: Session, stop: StopRequest) -> str:
    """Train to ``--steps`` (or ``--stop-at-step``); returns finished, stopped or interrupted
    (see ``equiformer.training.fit.fit``)."""
    return fit_task(DenoiseTask(session), stop)
