"""The training loop: optimizer steps, periodic validation and checkpoints, stopping cleanly.

One optimizer step consumes one *global* batch (``batch_size x accumulate x world_size``
chains) drawn by ``BatchOrder``; rank r takes its own slice of each micro-batch, and the loss
is scaled so that DistributedDataParallel's gradient average equals the gradient of the mean
over the whole global batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from ..data import Backbone
from .checkpoint import CHECKPOINT_NAME, save_checkpoint
from .config import TrainConfig
from .data import BatchOrder, NoisyBatch, make_batch
from .distributed import DistContext, all_reduce_sum, barrier
from .interrupt import StopRequest
from .metrics import CURVES_NAME, MetricsLog
from .objective import denoise, squared_deviation
from .validation import ValidationResult, evaluate, write_example


@dataclass
class TrainWindow:
    """Sum of the per-step training losses and seconds since the last ``train`` record."""

    loss_sum: float = 0.0
    steps: int = 0
    seconds: float = 0.0

    def add(self, loss: float, seconds: float) -> None:
        self.loss_sum += loss
        self.steps += 1
        self.seconds += seconds

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> "TrainWindow":
        return cls(float(state["loss_sum"]), int(state["steps"]), float(state["seconds"]))


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
        return {
            "step": self.step,
            "config": self.config.to_dict(),
            "world_size": self.ctx.world_size,
            "data_fingerprint": self.data_fingerprint,
            "val_fingerprint": self.val_fingerprint,
            "elapsed": self.elapsed,
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "order": self.order.state_dict(),
            "train_window": self.window.state_dict(),
            "validation_due": self.validation_due,
        }

    def say(self, message: str) -> None:
        """Print on rank 0 without breaking the progress bar."""
        if self.ctx.is_main:
            from tqdm import tqdm

            tqdm.write(message)


class RunState(Protocol):
    """What ``save``, ``save_timed`` and ``write_train_record`` use of a session: ``Session``
    here, and the atomistic trainer's session (``equiformer.atomistic.training_loop``)."""

    ctx: DistContext
    out: Path
    metrics: MetricsLog
    step: int
    elapsed: float
    window: TrainWindow
    order: BatchOrder

    def checkpoint_state(self) -> dict: ...


def save(session: RunState) -> None:
    """Rank 0 writes the checkpoint; the barrier keeps ranks from exiting before it is done."""
    if session.ctx.is_main:
        save_checkpoint(session.out / CHECKPOINT_NAME, session.checkpoint_state())
    barrier(session.ctx)


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


def write_train_record(session: RunState, lr: float, grad_norm: float, started: float,
                       partial: bool = False) -> None:
    """The mean training loss of the window; a full record starts a new window.

    A ``partial`` record (a stop or an interrupt between ``--log-every`` steps) keeps the
    window going: a resumed run drops the record and logs the full one at the usual step.
    """
    window = session.window
    extra = {"partial": True} if partial else {}
    session.metrics.write(
        kind="train", step=session.step, loss=window.loss_sum / window.steps, lr=lr,
        grad_norm=grad_norm, steps_per_s=window.steps / max(window.seconds, 1e-9),
        elapsed_s=session.elapsed + time.perf_counter() - started,
        epoch=session.order.epoch, **extra,
    )
    if not partial:
        session.window = TrainWindow()


def save_timed(session: RunState, started: float) -> float:
    """``save`` with the run time since ``started`` added; returns the new start."""
    now = time.perf_counter()
    session.elapsed += now - started
    save(session)
    return now


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or inf; ``denoise.py`` reports it in one line (exit status 1)."""


def fit(session: Session, stop: StopRequest) -> str:
    """Train to ``--steps`` (or ``--stop-at-step``); returns finished, stopped or interrupted.

    A stop request (Ctrl-C, SIGTERM) ends the run after the current step with a checkpoint,
    skipping that step's validation (it runs first thing on ``--resume``), except when the
    step was the last of ``--steps``: then the run is trained and finishes normally, with its
    final validation and exit status 0.
    """
    from tqdm import tqdm

    config, ctx = session.config, session.ctx
    end = min(config.steps, config.stop_at_step) if config.stop_at_step else config.steps
    if session.validation_due:  # skipped when the run was interrupted at this step
        validate(session)
        save(session)  # no longer due: a kill before the next checkpoint must not redo it
    bar = tqdm(total=config.steps, initial=session.step, unit="step", dynamic_ncols=True,
               disable=not (ctx.is_main and config.progress), desc="denoise")
    started = time.perf_counter()
    status = "finished" if end == config.steps else "stopped"
    try:
        while session.step < end:
            lr = session.optimizer.param_groups[0]["lr"]
            step_start = time.perf_counter()
            local_sum, grad_norm = train_step(session)
            session.step += 1
            # one collective per step: the global loss, and whether any rank was signalled
            shared = torch.stack([local_sum, local_sum.new_tensor(float(stop.requested))])
            loss_sum, signalled = all_reduce_sum(shared, ctx).tolist()
            loss = loss_sum / (config.per_rank_batch * ctx.world_size)
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"training loss is {loss} at step {session.step}: lower --lr (or --noise), or "
                    "check the data; this step was not saved"
                )
            session.window.add(loss, time.perf_counter() - step_start)  # no validation time
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            last = session.step == config.steps
            # every rank sees the same `signalled` and `last`, so all agree to carry on
            interrupted = signalled > 0 and not last
            if signalled > 0 and last:
                session.say("all steps are trained: finishing the run (final validation) "
                            "before exiting")
            full_record = session.step % config.log_every == 0 or last
            if full_record or session.step == end or interrupted:
                write_train_record(session, lr, float(grad_norm), started,
                                   partial=not full_record)
            session.validation_due = session.step % config.val_every == 0 or last
            if session.validation_due and not interrupted:
                if signalled > 0:  # a second Ctrl-C aborts the validation: keep this step first
                    started = save_timed(session, started)
                validate(session)
            if interrupted or session.step == end or session.step % config.checkpoint_every == 0:
                started = save_timed(session, started)
            if interrupted:
                status = "interrupted"
                break
    finally:
        bar.close()
    return status
