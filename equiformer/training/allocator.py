"""Stop glibc from handing freed memory back to the kernel between training steps.

Each step allocates and frees the same large activation tensors.  By default glibc maps blocks
above a (slowly adapting) threshold straight from the kernel and unmaps them when freed, so the
next step faults every page in again.  A training script, unlike a library, may set the process
allocator: ``denoise.py`` does, through ``keep_freed_memory``.
"""

from __future__ import annotations

import ctypes
import platform

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h
# largest first: glibc 2.36 (checked here) accepts any int; older versions refuse more than
# HEAP_MAX_SIZE / 2 (32 MiB on 64-bit), so that is the fallback
_MMAP_THRESHOLDS = (2**31 - 1, 32 << 20)
_TRIM_THRESHOLD = 2_000_000_000  # fits a C int; in effect "never trim"


def keep_freed_memory() -> bool:
    """Serve blocks up to 2 GiB (32 MiB where glibc refuses more) from the heap and never trim
    it (Linux with glibc only).

    Large graphs' edge tensors are otherwise mapped from the kernel and faulted in afresh every
    step (``ab_compare.py --b-keep-freed-memory`` measures the gain; benchmarks/RESULTS.md).
    Both settings are needed: glibc
    documents that setting any threshold turns off its dynamic mmap threshold, so a trim threshold
    alone would leave every block above 128 KiB mapped and unmapped on each step.  Returns
    whether the settings are in force.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mmap threshold first: if it is refused, leave the trim threshold alone (see above)
    if not any(mallopt(_M_MMAP_THRESHOLD, value) == 1 for value in _MMAP_THRESHOLDS):
        return False
    return mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
