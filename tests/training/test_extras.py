"""``denoise.py`` without the ``denoise`` extra: one line naming what is missing, status 1."""

from __future__ import annotations

import subprocess
import sys

import pytest

from denoise_runner import DENOISE, REPO, args
from equiformer.training.extras import DENOISE_EXTRAS, INSTALL_HINT, missing_extras

# Runs denoise.py as __main__ after putting a finder first on sys.meta_path that refuses the
# named top-level packages (and their submodules), as if they were not installed.
BLOCKED_RUN = """
import runpy, sys

class Blocker:
    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

blocked = sys.argv[1].split(",")
sys.meta_path.insert(0, Blocker(blocked))
script = sys.argv[2]
sys.argv = sys.argv[2:]
runpy.run_path(script, run_name="__main__")
"""


def run_blocked(blocked: list[str], out) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", BLOCKED_RUN, ",".join(blocked), str(DENOISE),
               *args(out, "--steps", "1")]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("blocked", [["tqdm"], ["gemmi"], ["matplotlib"], list(DENOISE_EXTRAS)])
def test_missing_extra_is_one_line_and_status_1(blocked, tmp_path):
    result = run_blocked(blocked, tmp_path / "run")
    lines = result.stderr.splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith("denoise.py: error: missing optional package")
    assert INSTALL_HINT in line
    for name in DENOISE_EXTRAS:
        assert (name in line) == (name in blocked), line
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "run").exists(), "nothing is written before the check"


def test_all_extras_present_in_the_test_environment():
    assert missing_extras() == []
