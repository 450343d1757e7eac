"""Every benchmark script runs end to end in its ``--quick`` mode and prints numbers.

Timings are never asserted (machines are shared and noisy); the scripts' outputs are.  The
``torch.compile`` benchmark is left out: compiling takes minutes on two cores.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
NUMBER = r"\d+\.\d+"
ON_CPU = ["--device", "cpu"]

# script, extra arguments, a line every successful run prints
CASES = [
    ("so3_speed.py", ON_CPU, rf"^ 3 +{NUMBER}"),
    ("degree_scaling.py", ON_CPU, r"^crossover: "),
    ("reversible_memory.py", ON_CPU, rf"^growth 2 -> 4 blocks: reversible {NUMBER}x, plain {NUMBER}x"),
    ("node_scaling.py", ON_CPU + ["--reversible", "--edge-chunk-size", "500"], rf"^ +400 +fwd\+bwd +{NUMBER}"),
    ("peer_comparison.py", ON_CPU + ["--no-memory"], rf"^denoise-quick +ours +{NUMBER} +{NUMBER}"),
    ("memory_stability.py", [], rf"^peak RSS growth after warm-up: [+-]{NUMBER} MB"),
    ("ab_compare.py", ["--ops"], rf"^denoise-quick bwd: median A {NUMBER} ms B {NUMBER} ms A/B {NUMBER}"),
    ("rotation_products.py", [], rf"^ +17 +4 +{NUMBER} +{NUMBER} +{NUMBER}  (direct|transposed)$"),
    ("op_profile.py", [], rf"^denoise-quick forward: untimed step {NUMBER} ms; \d+ operations"),
    ("mixed_sizes.py", ON_CPU, rf"^ +forward_packed +{NUMBER} +forward +{NUMBER} +{NUMBER}x$"),
    ("neighbour_search.py", ON_CPU, rf"^ +600 +gaussian +{NUMBER} +{NUMBER} +{NUMBER}x$"),
    ("neighbour_search.py", ON_CPU + ["--radius", "5"], rf"^ +600 +uniform +{NUMBER} +{NUMBER} +{NUMBER}x$"),
    ("potential_md.py", ON_CPU, r"^NVE, 32 atoms, float64, 1 fs, 20 steps .* max \|E\(t\) - E\(0\)\| = \d\.\d\de-\d+ eV/atom"),
]


@pytest.mark.parametrize("script, extra, pattern", CASES, ids=[c[0] for c in CASES])
def test_benchmark_quick_run(script: str, extra: list[str], pattern: str) -> None:
    cmd = [sys.executable, str(BENCHMARKS / script), "--quick", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.search(pattern, out.stdout, flags=re.MULTILINE), out.stdout[-2000:]
    assert not re.search(r"\bnan\b|failed", out.stdout), out.stdout[-2000:]


def test_gpu_check_quick_run_on_cpu(tmp_path: Path) -> None:
    """The GPU check's CPU smoke run: every part passes and the report has their numbers."""
    report = tmp_path / "report.md"
    cmd = [sys.executable, str(BENCHMARKS / "gpu_check.py"), "--quick", *ON_CPU, "--out", str(report)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    for part in ("equivariance", "masking", "denoise", "peer_comparison"):
        assert re.search(rf"^{part}: ok \(", out.stdout, flags=re.MULTILINE), out.stdout
    assert not re.search(r"\bnan\b|failed", out.stdout), out.stdout[-2000:]
    text = report.read_text()
    assert "| equivariance | ok |" in text and "| masking | ok |" in text
    assert re.search(rf"\| mlp-cg \| bf16-autocast \| {NUMBER}e-\d+ \|", text), text
    assert '"rmsd_denoised": ' in text and "denoise-quick" in text


def test_gpu_check_reports_parts_that_run_out_of_time(tmp_path: Path) -> None:
    """A part past its time limit is killed and reported; the next part still runs."""
    report = tmp_path / "report.json"
    cmd = [sys.executable, str(BENCHMARKS / "gpu_check.py"), "--quick", *ON_CPU, "--out", str(report),
           "--parts", "masking", "denoise", "--time-budget", "0"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    parts = json.loads(report.read_text())["parts"]
    assert [(name, p["status"]) for name, p in parts.items()] == [("masking", "timed out"), ("denoise", "timed out")]
    assert parts["masking"]["run"]["timeout"] == 1.0
