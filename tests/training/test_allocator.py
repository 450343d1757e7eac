"""denoise.py keeps freed memory in glibc's heap (faster CPU steps); elsewhere it does nothing."""
import platform
import subprocess
import sys

import pytest

from equiformer.training import allocator


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_applies_on_glibc():
    # in a child process: the setting lasts for the life of the process that makes it
    code = "from equiformer.training.allocator import keep_freed_memory; print(keep_freed_memory())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_does_nothing_without_glibc(monkeypatch):
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    assert allocator.keep_freed_memory() is False
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    monkeypatch.setattr(platform, "libc_ver", lambda *a, **k: ("musl", "1.2"))
    assert allocator.keep_freed_memory() is False


_REFAULTS = """
import resource, sys, torch
from equiformer.training.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
faults = []
for _ in range(6):  # like training steps: the same big block allocated and freed again
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(100 << 18).fill_(1.0)  # 100 MiB (above the old 32 MiB threshold)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[3:]))  # steady state (the first rounds may still grow the heap)
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_large_blocks_are_reused_without_page_faults():
    """A freed 100 MiB tensor's pages are reused by the next ones instead of being unmapped and
    faulted in again (25,600 faults of 4 KiB pages each time): edge tensors of large graphs are
    this big."""

    def refaults(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", _REFAULTS, mode], capture_output=True, text=True, check=True)
        return int(out.stdout.strip())

    assert refaults("default") > 60_000  # the control: glibc maps such blocks fresh each time
    assert refaults("keep") < 2_000
