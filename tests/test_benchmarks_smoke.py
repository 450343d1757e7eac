"""Every benchmark script runs end to end in its ``--quick`` mode and prints numbers.

Timings are never asserted (machines are shared and noisy); the scripts' outputs are.  The
``torch.compile`` benchmark is left out: compiling takes minutes on two cores.
"""
from __future__ import annotations

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
]


@pytest.mark.parametrize("script, extra, pattern", CASES, ids=[c[0] for c in CASES])
def test_benchmark_quick_run(script: str, extra: list[str], pattern: str) -> None:
    cmd = [sys.executable, str(BENCHMARKS / script), "--quick", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.search(pattern, out.stdout, flags=re.MULTILINE), out.stdout[-2000:]
    assert not re.search(r"\bnan\b|failed", out.stdout), out.stdout[-2000:]
