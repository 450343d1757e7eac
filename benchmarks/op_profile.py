"""Where one step's time goes, operation by operation (ours, CPU).

Every ATen operation of one forward (or forward+backward) is timed as it is dispatched and
grouped by operation and input shapes.  Timing each operation adds Python overhead, so the sum
is an upper bound on the step; the ranking is what this is for.

    python benchmarks/op_profile.py [--config denoise-1536] [--backward] [--top 25] [--quick]
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line  # noqa: E402
from peer_comparison import CONFIGS, QUICK, build, inputs, step  # noqa: E402


class _Timer(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.total = collections.defaultdict(lambda: [0, 0.0])  # (op, shapes) -> [calls, seconds]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        t0 = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        elapsed = time.perf_counter() - t0
        tensors = args[0] if func is torch.ops.aten.cat.default else args
        shapes = tuple(tuple(a.shape) for a in tensors if isinstance(a, torch.Tensor))
        entry = self.total[(str(func).removeprefix("aten."), shapes)]
        entry[0] += 1
        entry[1] += elapsed
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="denoise-1536", choices=sorted({**CONFIGS, **QUICK}))
    parser.add_argument("--backward", action="store_true", help="profile forward+backward")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    name = "denoise-quick" if args.quick else args.config
    config, n = {**CONFIGS, **QUICK}[name]
    device = torch.device("cpu")
    model, data = build("ours", config, device), inputs(n, device)
    for _ in range(2):
        step(model, *data, backward=True)
    t0 = time.perf_counter()
    step(model, *data, backward=args.backward)
    plain = time.perf_counter() - t0
    timer = _Timer()
    with timer:
        step(model, *data, backward=args.backward)
    rows = sorted(timer.total.items(), key=lambda kv: -kv[1][1])
    summed = sum(v[1] for v in timer.total.values())
    calls = sum(v[0] for v in timer.total.values())
    print(machine_line(device))
    print(f"{name} {'forward+backward' if args.backward else 'forward'}: untimed step {plain * 1e3:.1f} ms; "
          f"{calls} operations summing to {summed * 1e3:.1f} ms when timed one by one")
    print(f"{'total ms':>9} {'calls':>6} {'ms/call':>8}  operation and input shapes")
    for (op, shapes), (count, seconds) in rows[: args.top]:
        print(f"{seconds * 1e3:>9.2f} {count:>6} {seconds / count * 1e3:>8.3f}  {op} {list(shapes)}")


if __name__ == "__main__":
    main()
