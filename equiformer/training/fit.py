"""The training loop both trainers share: optimizer steps, records, validation, checkpoints, and
ending cleanly (finished, stopped or interrupted).

A trainer hands ``fit`` a ``Task``: its session, a ``Plan`` (how far to train and how often to
log, validate and save) and what differs between tasks (the step and how its summed errors
become the loss, validation, a log line).  The loop's bookkeeping is here too: the training
loss window, the records, and the checkpoint keys every trainer writes.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from .checkpoint import CHECKPOINT_NAME, save_checkpoint
from .config import Settings
from .data import BatchOrder
from .distributed import DistContext, all_reduce_sum, barrier
from .interrupt import StopRequest
from .metrics import MetricsLog


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
    def from_state(cls, state: dict) -> TrainWindow:
        return cls(float(state["loss_sum"]), int(state["steps"]), float(state["seconds"]))


class RunState(Protocol):
    """What the loop uses of a trainer's session (``equiformer.training.loop.Session`` and
    ``equiformer.atomistic.training_loop.Session``)."""

    config: Settings
    ctx: DistContext
    out: Path
    metrics: MetricsLog
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    order: BatchOrder
    data_fingerprint: str
    step: int
    elapsed: float
    window: TrainWindow
    validation_due: bool

    def checkpoint_state(self) -> dict: ...

    def say(self, message: str) -> None: ...


def loop_state(session: RunState, model: nn.Module) -> dict[str, Any]:
    """The checkpoint keys every trainer writes (its ``checkpoint_state`` adds its own): what
    ``--resume`` needs to continue ``model``'s training bit for bit."""
    return {
        "step": session.step,
        "config": session.config.to_dict(),
        "world_size": session.ctx.world_size,
        "data_fingerprint": session.data_fingerprint,
        "elapsed": session.elapsed,
        "model": model.state_dict(),
        "optimizer": session.optimizer.state_dict(),
        "scheduler": session.scheduler.state_dict(),
        "order": session.order.state_dict(),
        "train_window": session.window.state_dict(),
        "validation_due": session.validation_due,
    }


def save(session: RunState) -> None:
    """Rank 0 writes the checkpoint; the barrier keeps ranks from exiting before it is done."""
    if session.ctx.is_main:
        save_checkpoint(session.out / CHECKPOINT_NAME, session.checkpoint_state())
    barrier(session.ctx)


def save_timed(session: RunState, started: float) -> float:
    """``save`` with the run time since ``started`` added; returns the new start."""
    now = time.perf_counter()
    session.elapsed += now - started
    save(session)
    return now


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


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or inf; the trainers report it in one line (exit status 1)."""


@dataclass(frozen=True)
class Plan:
    """A trainer's settings as the loop needs them."""

    steps: int
    """The run's length: its last step validates, saves and finishes the run."""
    end: int
    """Where this invocation stops (``steps``, or earlier: denoise.py's ``--stop-at-step``)."""
    log_every: int
    validate_every: int
    save_every: int
    diverged_hint: str
    """What to try when the loss is not finite."""
    max_seconds: float | None = None
    """This invocation's training time limit, checked after every step (``--max-time``; inf:
    none).  None: the task has no such limit, and its step shares no flag for it."""
    bar: str | None = None
    """The progress bar's label (None: no bar, and no tqdm import)."""


@dataclass
class Step:
    """One optimizer step on this rank, as ``Task.train_step`` returns it."""

    sums: Tensor
    """This rank's error sums (float64): summed over ranks with the step's flags."""
    grad_norm: Tensor
    loss: Callable[[Tensor], float]
    """The global batch's loss from ``sums`` summed over ranks."""


class Task(Protocol):
    """What a trainer hands ``fit``: its session and plan, and what differs between tasks."""

    @property
    def session(self) -> RunState: ...

    @property
    def plan(self) -> Plan: ...

    def train_step(self) -> Step:
        """One optimizer step (``session.step`` is the number of steps before it)."""
        ...

    def validate(self) -> None:
        """Evaluate at ``session.step`` on every rank, log it on rank 0, clear ``validation_due``."""
        ...

    def record_line(self, mean: float, lr: float) -> str | None:
        """A line to print with each training record (None: none)."""
        ...


class _NoBar:
    """Stands in for a tqdm bar that is not shown."""

    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(plan: Plan, initial: int) -> Any:
    if plan.bar is None:
        return _NoBar()
    from tqdm import tqdm  # an extra of denoise.py only

    return tqdm(total=plan.steps, initial=initial, unit="step", dynamic_ncols=True, desc=plan.bar)


def fit(task: Task, stop: StopRequest) -> str:
    """Train to ``plan.end``; returns finished, stopped (short of ``plan.steps``: ``end`` or
    ``max_seconds``) or interrupted.

    A stop request (Ctrl-C, SIGTERM) ends the run after the current step with a checkpoint,
    skipping that step's validation (it runs first thing on ``--resume``), except when the
    step was the last of ``plan.steps``: then the run finishes normally, with its final
    validation.  Every rank takes part in every decision: the signal and the clock are summed
    over ranks with the step's losses, in one collective.
    """
    session, plan = task.session, task.plan
    if session.validation_due:  # skipped when the run was interrupted at this step
        task.validate()
        save(session)  # no longer due: a kill before the next checkpoint must not redo it
    bar = _progress_bar(plan, session.step)
    began = started = time.perf_counter()
    try:
        while session.step < plan.end:
            lr = session.optimizer.param_groups[0]["lr"]
            step_start = time.perf_counter()
            step = task.train_step()
            session.step += 1
            flags = [float(stop.requested)]
            if plan.max_seconds is not None:
                flags.append(float(time.perf_counter() - began >= plan.max_seconds))
            sums = step.sums.reshape(-1)
            totals = all_reduce_sum(torch.cat([sums, sums.new_tensor(flags)]), session.ctx).cpu()
            loss = step.loss(totals[: len(sums)])
            if not math.isfinite(loss):
                raise TrainingDiverged(f"training loss is {loss} at step {session.step}: "
                                       f"{plan.diverged_hint}; this step was not saved")
            session.window.add(loss, time.perf_counter() - step_start)  # no validation time
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            signalled = bool(totals[len(sums)] > 0)
            last = session.step == plan.steps
            # every rank sees the same flags and `last`, so all agree on what comes next
            interrupted = signalled and not last
            out_of_time = len(flags) > 1 and bool(totals[-1] > 0) and not last and not interrupted
            if signalled and last:
                session.say("all steps are trained: finishing the run (final validation) "
                            "before exiting")
            full_record = session.step % plan.log_every == 0 or last
            if full_record or session.step == plan.end or interrupted or out_of_time:
                mean = session.window.loss_sum / session.window.steps
                write_train_record(session, lr, float(step.grad_norm), started,
                                   partial=not full_record)
                line = task.record_line(mean, lr)
                if line is not None:
                    session.say(line)
            session.validation_due = (session.step % plan.validate_every == 0 or last
                                      or out_of_time)
            if session.validation_due and not interrupted:
                if signalled:  # a second Ctrl-C aborts the validation: keep this step first
                    started = save_timed(session, started)
                task.validate()
            if (interrupted or out_of_time or session.step == plan.end
                    or session.step % plan.save_every == 0):
                started = save_timed(session, started)
            if interrupted:
                return "interrupted"
            if out_of_time:
                return "stopped"
    finally:
        bar.close()
    return "finished" if plan.end == plan.steps else "stopped"
