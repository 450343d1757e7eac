"""Training a ``Potential`` on energies, forces and stresses: loss, steps, EMA, validation.

One optimizer step takes one *global* batch of ``batch_size x world_size`` structures from
``BatchOrder``; rank r evaluates its own slice.  Every term of the loss is divided by a count
over the global batch, which every rank knows from the picks without communicating (structures,
atoms, stress-labelled structures), so the sum of the ranks' gradients (``sum_gradients``) is the
gradient of the loss of the whole global batch: 2 ranks x B train like 1 process x 2B.

The loss (MACE's "weighted" loss)::

    energy_weight * mean_g ((E_g - E_g') / n_g)^2               energy per atom, eV^2/atom^2
  + forces_weight * mean over force components (F - F')^2        eV^2/Å^2
  + stress_weight * mean_g mean over 9 components (σ - σ')^2     eV^2/Å^6, labelled periodic g only
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..training.data import BatchOrder
from ..training.distributed import DistContext, all_reduce_sum, sum_gradients
from ..training.fit import Plan, Step, TrainWindow, loop_state
from ..training.fit import fit as fit_task
from ..training.interrupt import StopRequest
from ..training.metrics import CURVES_NAME, MetricsLog
from .plots import plot_parity
from .potential import Potential
from .structures import Structures

if TYPE_CHECKING:
    from .train import PotentialTrainConfig

POTENTIAL_NAME = "potential.pt"
PARITY_NAME = "parity.png"
PROGRAM = "equiformer.atomistic.train"
"""The ``program`` of this trainer's checkpoints (``load_checkpoint`` refuses others')."""
MILLI = 1000.0  # eV -> meV in the metrics


class ExponentialMovingAverage:
    """A copy of the model whose weights trail the trained ones: ``w <- d w + (1 - d) w_trained``.

    The decay warms up as ``min(decay, (1 + t) / (10 + t))`` after update t (TensorFlow's
    ``num_updates`` rule), so that the average is not dominated by the initial weights in a short
    run.  Buffers (the fitted ``ref`` and ``scale``) are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module, updates: int) -> None:
        decay = min(self.decay, (1 + updates) / (10 + updates))
        for average, current in zip(self.module.parameters(), model.parameters()):
            average.lerp_(current, 1.0 - decay)
        for average, current in zip(self.module.buffers(), model.buffers()):
            average.copy_(current)


@dataclass
class Session:
    """Everything one training process holds; ``checkpoint_state`` is its resumable part."""

    config: PotentialTrainConfig
    ctx: DistContext
    device: torch.device
    dtype: torch.dtype
    model: Potential
    """The trained (raw) weights."""
    ema: ExponentialMovingAverage
    """Its moving average: validated, exported to ``potential.pt``."""
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    order: BatchOrder
    train: Structures
    valid: Structures
    valid_chunks: list[list[int]]
    """The validation structures in fixed forward passes, shared out round-robin over ranks."""
    out: Path
    metrics: MetricsLog
    data_fingerprint: str
    valid_fingerprint: str
    step: int = 0
    elapsed: float = 0.0
    """Training seconds of earlier invocations of this run."""
    window: TrainWindow = field(default_factory=TrainWindow)
    validation_due: bool = False
    """The validation of ``step`` was skipped (a stop request): ``fit`` runs it first."""

    def checkpoint_state(self) -> dict[str, Any]:
        """The resumable state, as tensors and primitives only (``weights_only`` loads it)."""
        return {"program": PROGRAM, **loop_state(self, self.model), "elements": list(self.model.elements),
                "valid_fingerprint": self.valid_fingerprint, "ema": self.ema.module.state_dict()}

    def say(self, message: str) -> None:
        if self.ctx.is_main:
            print(message, flush=True)


# ---------------------------------------------------------------------------------- the loss


def predict(model: nn.Module, batch: Structures, stress: bool, create_graph: bool) -> dict[str, Tensor]:
    """The potential's ``energy`` (G,), ``forces`` (N, 3) and, with ``stress``, ``stress``
    (G, 3, 3) (zeros where ``batch.has_stress`` is False), in batch order.

    ``Potential`` computes stresses of fully periodic batches only: a batch that mixes
    stress-labelled structures with others (slabs, molecules) is evaluated in two passes.
    """
    def run(part: Structures, with_stress: bool) -> dict[str, Tensor]:
        return model(part.numbers, part.positions, part.cell, part.pbc, part.graph_index,
                     forces=True, stress=with_stress, create_graph=create_graph)

    labelled = batch.has_stress
    if not stress or not bool(labelled.any()):
        return run(batch, False)
    if bool(labelled.all()):
        return run(batch, True)
    first = labelled.nonzero().flatten().tolist()
    second = (~labelled).nonzero().flatten().tolist()
    a, b = run(batch.select(first), True), run(batch.select(second), False)
    # back to batch order: position k of the concatenation holds structure (first + second)[k]
    structures = torch.argsort(torch.tensor(first + second, device=labelled.device))  # (G,)
    atoms = torch.argsort(torch.cat([batch.atom_index(first), batch.atom_index(second)]).to(labelled.device))  # (N,)
    return {
        "energy": torch.cat([a["energy"], b["energy"]])[structures],
        "forces": torch.cat([a["forces"], b["forces"]])[atoms],
        "stress": torch.cat([a["stress"], a["stress"].new_zeros(len(second), 3, 3)])[structures],
    }


def squared_error_sums(out: dict[str, Tensor], batch: Structures) -> Tensor:
    """``(3,)``: sums over the batch of the energy-per-atom, force-component and per-structure
    mean stress squared errors (the loss's numerators)."""
    sizes = batch.sizes.to(out["energy"].dtype)  # (G,)
    energy = ((out["energy"] - batch.energy) / sizes).square().sum()
    forces = (out["forces"] - batch.forces).square().sum()
    stress = out["energy"].new_zeros(())
    if "stress" in out:
        per_structure = (out["stress"] - batch.stress).square().mean((1, 2))  # (G,)
        stress = torch.where(batch.has_stress, per_structure, 0.0).sum()
    return torch.stack([energy, forces, stress])


def weighted_loss(sums: Tensor, counts: Sequence[int], config: PotentialTrainConfig) -> Tensor:
    """The loss from ``squared_error_sums`` and the counts (structures, atoms, stress-labelled
    structures) of the set they sum over."""
    structures, atoms, stressed = counts
    loss = config.energy_weight * sums[0] / structures + config.forces_weight * sums[1] / (3 * atoms)
    if stressed:
        loss = loss + config.stress_weight * sums[2] / stressed
    return loss


def counts_of(structures: Structures, indices: Sequence[int]) -> tuple[int, int, int]:
    """Structures, atoms and stress-labelled structures among ``indices`` (repeats counted)."""
    rows = torch.as_tensor(list(indices), dtype=torch.long)
    return len(indices), int(structures.sizes[rows].sum()), int(structures.has_stress[rows].sum())


def train_step(session: Session) -> tuple[Tensor, tuple[int, int, int], Tensor]:
    """One optimizer step; returns this rank's ``squared_error_sums`` (float64), the global
    batch's counts and the gradient norm."""
    config, ctx = session.config, session.ctx
    picks = [index for index, _ in session.order.next(config.batch_size * ctx.world_size)]
    counts = counts_of(session.train, picks)  # of the global batch: the same on every rank
    mine = picks[ctx.rank * config.batch_size : (ctx.rank + 1) * config.batch_size]
    batch = session.train.select(mine).to(session.device, session.dtype)
    out = predict(session.model, batch, session.train.stress is not None, create_graph=True)
    sums = squared_error_sums(out, batch)  # (3,)
    weighted_loss(sums, counts, config).backward()
    sum_gradients(session.model, ctx)
    max_norm = config.clip_grad if config.clip_grad > 0 else math.inf
    grad_norm = nn.utils.clip_grad_norm_(session.model.parameters(), max_norm)
    session.optimizer.step()
    session.scheduler.step()
    session.optimizer.zero_grad(set_to_none=True)
    session.ema.update(session.model, session.step + 1)
    return sums.detach().double(), counts, grad_norm


# ---------------------------------------------------------------------------------- validation


def validation_chunks(valid: Structures, size: int) -> list[list[int]]:
    """Fixed forward passes of at most ``size`` structures, stress-labelled ones apart from the
    others (so that no pass needs two), independent of the number of ranks."""
    chunks = []
    for labelled in (True, False):
        members = (valid.has_stress == labelled).nonzero().flatten().tolist()
        chunks += [members[i : i + size] for i in range(0, len(members), size)]
    return chunks


def evaluate(module: nn.Module, valid: Structures, chunks: list[list[int]], ctx: DistContext,
             device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
    """Predictions for every validation structure, float64 on the CPU, on every rank.

    Rank r evaluates chunks r, r + W, ...; the others' entries stay zero and one all-reduce
    sums them in, which adds exact zeros: the result does not depend on the number of ranks.
    """
    stress = valid.stress is not None
    energy = torch.zeros(len(valid), dtype=torch.float64, device=device)  # (G,)
    forces = torch.zeros(valid.positions.shape, dtype=torch.float64, device=device)  # (N, 3)
    stresses = torch.zeros(len(valid), 3, 3, dtype=torch.float64, device=device)  # (G, 3, 3)
    for c, chunk in enumerate(chunks):
        if c % ctx.world_size != ctx.rank:
            continue
        out = predict(module, valid.select(chunk).to(device, dtype), stress, create_graph=False)
        rows = torch.tensor(chunk, device=device)
        energy[rows] = out["energy"].detach().double()
        forces[valid.atom_index(chunk).to(device)] = out["forces"].detach().double()
        if "stress" in out:  # not for a chunk of unlabelled structures
            stresses[rows] = out["stress"].detach().double()
    flat = all_reduce_sum(torch.cat([energy, forces.flatten(), stresses.flatten()]), ctx).cpu()
    energy, forces, stresses = flat.split([energy.numel(), forces.numel(), stresses.numel()])
    result = {"energy": energy, "forces": forces.view(-1, 3)}
    if stress:
        result["stress"] = stresses.view(-1, 3, 3)
    return result


def validation_metrics(pred: dict[str, Tensor], valid: Structures, config: PotentialTrainConfig) -> dict[str, float]:
    """Errors of ``pred`` against the labels in meV: energy per atom (meV/atom), force components
    (meV/Å; ``forces_rms`` is the labels' RMS, the error of predicting zero), stress components
    of the labelled periodic structures (meV/Å^3), and the loss."""
    energy = (pred["energy"] - valid.energy) / valid.sizes  # (G,) eV/atom
    forces = (pred["forces"] - valid.forces).flatten()  # (3N,)
    metrics = {
        "loss": float(weighted_loss(squared_error_sums(pred, valid), counts_of(valid, range(len(valid))), config)),
        "energy_mae": MILLI * float(energy.abs().mean()),
        "energy_rmse": MILLI * float(energy.square().mean().sqrt()),
        "forces_mae": MILLI * float(forces.abs().mean()),
        "forces_rmse": MILLI * float(forces.square().mean().sqrt()),
        "forces_rms": MILLI * float(valid.forces.square().mean().sqrt()),
    }
    if "stress" in pred and bool(valid.has_stress.any()):
        stress = (pred["stress"] - valid.stress)[valid.has_stress].flatten()  # (9 S,)
        metrics["stress_mae"] = MILLI * float(stress.abs().mean())
        metrics["stress_rmse"] = MILLI * float(stress.square().mean().sqrt())
    return metrics


def validate(session: Session) -> dict[str, float]:
    """Evaluate the EMA weights; rank 0 logs the record and writes ``potential.pt`` (those very
    weights), ``parity.png`` and ``curves.png``."""
    pred = evaluate(session.ema.module, session.valid, session.valid_chunks, session.ctx,
                    session.device, session.dtype)
    metrics = validation_metrics(pred, session.valid, session.config)
    session.validation_due = False
    if session.ctx.is_main:
        session.metrics.write(kind="val", step=session.step, **metrics, structures=len(session.valid),
                              atoms=int(session.valid.sizes.sum()))
        session.ema.module.save(session.out / POTENTIAL_NAME)
        plot_parity(session.valid, pred, session.out / PARITY_NAME)
        session.metrics.plot(session.out / CURVES_NAME)
        stress = f", stress MAE {metrics['stress_mae']:.3f} meV/Å^3" if "stress_mae" in metrics else ""
        session.say(f"step {session.step}: validation energy MAE {metrics['energy_mae']:.2f} meV/atom, "
                    f"force MAE {metrics['forces_mae']:.1f} meV/Å (forces' RMS "
                    f"{metrics['forces_rms']:.1f}){stress}")
    return metrics


# ---------------------------------------------------------------------------------- the loop


@dataclass
class PotentialTask:
    """Training a potential as ``equiformer.training.fit``'s task."""

    session: Session

    @property
    def plan(self) -> Plan:
        config = self.session.config
        return Plan(steps=config.steps, end=config.steps, log_every=config.log_every,
                    validate_every=config.valid_every, save_every=config.save_every,
                    diverged_hint="lower --lr, or check the data",
                    max_seconds=config.max_time * 60 if config.max_time > 0 else math.inf)

    def train_step(self) -> Step:
        sums, counts, grad_norm = train_step(self.session)
        config = self.session.config
        return Step(sums, grad_norm, lambda totals: float(weighted_loss(totals, counts, config)))

    def validate(self) -> None:
        validate(self.session)

    def record_line(self, mean: float, lr: float) -> str:
        session = self.session
        return f"step {session.step}/{session.config.steps}: training loss {mean:.5g}, lr {lr:.3g}"


def fit(session: Session, stop: StopRequest) -> str:
    """Train to ``--steps``, or until ``--max-time`` runs out; returns finished, stopped or interrupted.

    At the last step or when time is up: validate, export and save (status finished or stopped;
    ``--resume`` continues a stopped run to ``--steps``).  A stop request (Ctrl-C, SIGTERM)
    saves a checkpoint after the current step and skips its validation, which then runs first
    on ``--resume`` (status interrupted).  Every rank takes part in every decision: the signal
    and the clock are summed over ranks with the step's losses (``equiformer.training.fit``).
    """
    return fit_task(PotentialTask(session), stop)
