"""Protein backbone denoising, the library behind ``denoise.py``.

Modules, one job each: ``config`` (settings, presets, command line), ``data`` (chains, data
order, crops and noise), ``objective`` (model, loss, RMSD), ``optim`` (AdamW and schedule),
``loop`` (denoising's training step), ``fit`` (the training loop), ``validation``,
``checkpoint`` (atomic, resumable), ``metrics`` (JSON lines and plot), ``distributed`` (DDP
helpers), ``interrupt`` (Ctrl-C), ``launch`` (start-up and exit status), ``run`` (set-up).
Nothing here is imported by ``import equiformer``; tqdm and matplotlib are imported on use.
The settings machinery, the loop, checkpoints, metrics, optimizer, interrupts, start-up and
multi-process helpers are generic and also drive ``equiformer.atomistic.train`` (interatomic potentials).
"""

from .config import PRESETS, ConfigError, SetupError, TrainConfig, build_parser
from .run import main, train

__all__ = ["PRESETS", "ConfigError", "SetupError", "TrainConfig", "build_parser", "main", "train"]
