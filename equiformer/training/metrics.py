"""Metrics as JSON lines (one record per line, easy to append and to read back) and a PNG plot.

Records have a ``kind``: ``train`` (mean loss since the last record, learning rate, gradient
norm, speed), ``val`` (backbone RMSD of noisy and denoised chains against the truth) and
``end`` (final summary with every rank's parameter digest).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import SetupError
from .files import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

METRICS_NAME = "metrics.jsonl"
CURVES_NAME = "curves.png"


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a metrics file, in order ([] if it does not exist).

    Records are appended in place, so a run killed mid-append (or out of disk space) can leave
    a torn last line: it is dropped with a warning. Any other unreadable line is a ValueError
    naming the file and the line.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(errors="replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):
                warnings.warn(f"{path} line {number}: dropping an incomplete last record "
                              f"(a run killed while writing it?): {line[:60]!r}", stacklevel=2)
                break
            raise ValueError(f"{path} line {number} is not a JSON record ({error}): "
                             f"{line[:60]!r}") from error
        if not isinstance(record, dict):
            raise ValueError(f"{path} line {number} is not a JSON object: {line[:60]!r}")
        records.append(record)
    return records


class MetricsLog:
    """Appends records to ``metrics.jsonl``; only the main process writes, the others keep none.

    On resume the file is cut back to the checkpoint's step: records written after the last
    checkpoint by the interrupted run describe steps that are about to be trained again, and
    ``partial`` train records (written at a stop) are superseded by the resumed run's full ones.
    """

    def __init__(self, folder: Path, enabled: bool, resume_step: int | None = None,
                 plotter: Callable[[list[dict[str, Any]], Path], None] | None = None):
        self.path = folder / METRICS_NAME
        self.enabled = enabled
        self.plotter = plotter or plot_curves
        """Draws the records into a PNG: ``plot_curves`` (denoising) unless another is given."""
        self.records: list[dict[str, Any]] = []
        self._plotted: tuple[int, int] | None = None
        if not enabled:
            return
        if resume_step is not None:
            try:
                records = read_metrics(self.path)
            except ValueError as error:
                raise SetupError(f"cannot resume the metrics: {error}") from error
            self.records = [r for r in records if r.get("step", 0) <= resume_step
                            and not (r.get("kind") == "train" and r.get("partial"))]
        with atomic_path(self.path) as temporary:
            temporary.write_text("".join(json.dumps(r) + "\n" for r in self.records))

    def write(self, **record: Any) -> None:
        if not self.enabled:
            return
        self.records.append(record)
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("kind") == kind]

    def plot(self, path: Path) -> None:
        """``plotter`` of the records, unless what it shows is unchanged since the last call (~1 s)."""
        key = (len(self.of_kind("train")), len(self.of_kind("val")))
        if self.enabled and key != self._plotted:
            self.plotter(self.records, path)
            self._plotted = key


def agg_figure(figsize: tuple[float, float]) -> Figure:
    """A matplotlib figure on the Agg canvas: the object API, no pyplot, no display and no
    global backend switch; matplotlib is imported here, so training without plots never needs it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: str | Path) -> None:
    """Write ``figure`` as a PNG, atomically."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)


def plot_curves(records: list[dict[str, Any]], path: str | Path) -> None:
    """Training loss and validation RMSD against step, side by side, as a PNG."""
    train = [r for r in records if r.get("kind") == "train" and math.isfinite(r["loss"])]
    val = [r for r in records if r.get("kind") == "val"]
    figure = agg_figure((10, 4))
    figure.subplots_adjust(left=0.1, right=0.98, bottom=0.13, top=0.91, wspace=0.3)
    loss_axes, rmsd_axes = figure.subplots(1, 2)
    loss_axes.plot([r["step"] for r in train], [r["loss"] for r in train], color="tab:blue")
    loss_axes.set(xlabel="step", ylabel="mean squared deviation (Å²)", title="training loss")
    if train and min(r["loss"] for r in train) > 0:
        loss_axes.set_yscale("log")
    steps = [r["step"] for r in val]
    rmsd_axes.plot(steps, [r["rmsd_noisy"] for r in val], "o--", color="tab:gray", label="noisy")
    rmsd_axes.plot(steps, [r["rmsd_denoised"] for r in val], "o-", color="tab:red",
                   label="denoised")
    rmsd_axes.set(xlabel="step", ylabel="backbone RMSD to truth (Å)",
                  title="validation (N, CA, C, O)")
    rmsd_axes.set_ylim(bottom=0)
    rmsd_axes.legend()
    for axes in (loss_axes, rmsd_axes):
        axes.grid(alpha=0.3)
    save_figure(figure, path)
