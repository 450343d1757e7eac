"""The packages of the ``denoise`` extra, checked in one place before a run starts.

``pip install equiformer`` brings torch and numpy only; ``denoise.py`` also needs tqdm (progress
bar and messages), matplotlib (``curves.png``) and gemmi (``--data`` PDB/mmCIF folders), which
``pip install "equiformer[denoise]"`` adds (the list lives in ``setup.py``'s ``denoise_requires``).
They are imported on use, deep in a run, so without this check a run would die with a traceback
minutes in, at its first progress message or plot.
"""

from __future__ import annotations

import importlib
import sys

DENOISE_EXTRAS = ("tqdm", "matplotlib", "gemmi")
"""Import names of the ``denoise`` extra's packages (``setup.py``: ``denoise_requires``)."""

INSTALL_HINT = 'pip install "equiformer[denoise]"'

EXIT_MISSING = 1


def missing_extras(names: tuple[str, ...] = DENOISE_EXTRAS) -> list[str]:
    """The packages among ``names`` that cannot be imported, in the order given.

    Each is imported (not just looked up), so a package that is present but broken counts
    as missing too.
    """
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def missing_extras_message(missing: list[str], prog: str = "denoise.py",
                           hint: str = INSTALL_HINT) -> str:
    """One line naming the missing packages and the command that installs them (``hint``)."""
    return (f"{prog}: error: missing optional package{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)}; install with: {hint}")


def exit_if_missing_extras(prog: str = "denoise.py") -> None:
    """Print one line to stderr and exit with status 1 if a ``denoise`` package is missing."""
    missing = missing_extras()
    if missing:
        print(missing_extras_message(missing, prog), file=sys.stderr)
        sys.exit(EXIT_MISSING)
