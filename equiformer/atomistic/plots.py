"""The potential trainer's figures: learning curves (``curves.png``) and validation parity plots
(``parity.png``), drawn with ``equiformer.training.metrics``' Agg figures (matplotlib on use)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..training.metrics import agg_figure, save_figure
from .structures import Structures


def plot_curves(records: list[dict[str, Any]], path: str | Path) -> None:
    """Training and validation loss, and validation energy and force MAE, against step."""
    train = [r for r in records if r.get("kind") == "train" and math.isfinite(r["loss"])]
    val = [r for r in records if r.get("kind") == "val"]
    figure = agg_figure((10, 4))
    figure.subplots_adjust(left=0.08, right=0.92, bottom=0.13, top=0.91, wspace=0.35)
    loss_axes, error_axes = figure.subplots(1, 2)
    loss_axes.plot([r["step"] for r in train], [r["loss"] for r in train], color="tab:blue", label="training")
    loss_axes.plot([r["step"] for r in val], [r["loss"] for r in val], "o-", color="tab:red", label="validation (EMA)")
    loss_axes.set(xlabel="step", ylabel="weighted loss", title="loss")
    if all(r["loss"] > 0 for r in train + val) and train + val:
        loss_axes.set_yscale("log")
    loss_axes.legend()
    steps = [r["step"] for r in val]
    error_axes.plot(steps, [r["forces_mae"] for r in val], "o-", color="tab:red", label="force MAE")
    error_axes.plot(steps, [r["forces_rms"] for r in val], "--", color="tab:gray", label="forces' RMS")
    error_axes.set(xlabel="step", ylabel="force error (meV/Å)", title="validation (EMA weights)")
    error_axes.set_ylim(bottom=0)
    energy_axes = error_axes.twinx()
    energy_axes.plot(steps, [r["energy_mae"] for r in val], "s-", color="tab:blue", label="energy MAE")
    energy_axes.set_ylabel("energy error (meV/atom)", color="tab:blue")
    energy_axes.set_ylim(bottom=0)
    handles = error_axes.get_legend_handles_labels()[0] + energy_axes.get_legend_handles_labels()[0]
    error_axes.legend(handles=handles, loc="upper right")
    for axes in (loss_axes, error_axes):
        axes.grid(alpha=0.3)
    save_figure(figure, path)


def plot_parity(valid: Structures, pred: dict[str, Tensor], path: str | Path) -> None:
    """Predicted against labelled energy per atom and force components on the validation set."""
    figure = agg_figure((10, 4.6))
    figure.subplots_adjust(left=0.09, right=0.98, bottom=0.12, top=0.9, wspace=0.3)
    energy_axes, force_axes = figure.subplots(1, 2)
    panels = (
        (energy_axes, valid.energy / valid.sizes, pred["energy"] / valid.sizes, "energy (eV/atom)", 16),
        (force_axes, valid.forces.flatten(), pred["forces"].flatten(), "force component (eV/Å)", 4),
    )
    for axes, label, predicted, what, size in panels:
        error = 1000 * (predicted - label)
        axes.scatter(label.numpy(), predicted.numpy(), s=size, alpha=0.5, linewidths=0)
        low, high = float(torch.minimum(label.min(), predicted.min())), float(torch.maximum(label.max(), predicted.max()))
        axes.plot([low, high], [low, high], color="black", linewidth=0.8)
        unit = "meV/atom" if what.startswith("energy") else "meV/Å"
        axes.set(xlabel=f"label {what}", ylabel=f"predicted {what}",
                 title=f"MAE {float(error.abs().mean()):.3g} {unit}, RMSE {float(error.square().mean().sqrt()):.3g}")
        axes.grid(alpha=0.3)
    save_figure(figure, path)
