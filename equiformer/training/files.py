"""Write output files atomically, so that a kill at any moment leaves the old file or the new one.

A checkpoint half-written when the job was killed would make ``--resume`` fail exactly when it
is needed; the same care costs nothing for the metrics, the plot and the PDB file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Iterator

TEMP_PREFIX = ".tmp-"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and rename it over ``path``.

    The temporary file lives in the same folder, so ``os.replace`` is an atomic rename on POSIX
    and Windows; the folder is fsynced too, so that the rename itself survives a power cut.
    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    temporary = path.parent / f"{TEMP_PREFIX}{path.name}.{os.getpid()}.{secrets.token_hex(4)}"
    temporary.open("xb").close()  # unlike mkstemp, honours the umask (0644, not 0600)
    try:
        yield temporary
        _fsync(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if os.name == "posix":  # Windows cannot open a folder to fsync it
        _fsync(path.parent)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete temporary files left by a process killed mid-write; returns what was removed."""
    removed = []
    for stale in Path(folder).glob(TEMP_PREFIX + "*"):
        stale.unlink(missing_ok=True)
        removed.append(stale)
    return removed


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

