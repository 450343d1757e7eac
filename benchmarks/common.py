"""Shared timing helpers: warm-up, median of repeats, CUDA events on GPU, peak memory."""
from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import time
from typing import Callable

import torch


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], object], device: torch.device, repeats: int = 5, warmup: int = 2) -> float:
    """Median seconds per call after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak_rss() -> None:
    """Restart the kernel's peak-RSS counter (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def rss_mb() -> float:
    """Resident set size now."""
    try:
        return _status_mb("VmRSS")
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mb() -> float:
    """Peak resident set size since the last ``reset_peak_rss`` (or since start)."""
    try:
        return _status_mb("VmHWM")
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine_line(device: torch.device) -> str:
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    return f"device: {device.type} ({what}); torch {torch.__version__}; python {platform.python_version()}"


def start_memory(device: torch.device) -> float:
    """Begin a peak-memory measurement; returns the baseline (MB) for ``peak_memory_since``."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    base = rss_mb()
    reset_peak_rss()
    return base


def peak_memory_since(device: torch.device, base: float) -> float:
    """Peak memory above ``base`` (MB): ``max_memory_allocated`` on CUDA, RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20 - base
    return peak_rss_mb() - base


def run_measurement(cmd: list[str]) -> "subprocess.CompletedProcess[str]":
    """Run one memory measurement in a fresh process.

    glibc keeps large freed blocks in its heap once its adaptive mmap threshold has grown, so
    the RSS of a long run reflects heap fragmentation as much as live tensors (measured: RSS
    rising ~8 MB per reversible block while live allocations stayed flat).  A fixed 64 KiB
    threshold serves every tensor above it by mmap and returns it on free, so peak RSS tracks
    peak live memory (256 KiB still left ~1 MB per block of small-block fragmentation).
    Applied alike to every library measured.
    """
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}
    return subprocess.run(cmd, capture_output=True, text=True, env=env)
