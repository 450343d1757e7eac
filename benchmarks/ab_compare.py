"""A/B: our model from two source trees (e.g. two commits), alternated repeat by repeat.

Each side runs in its own worker process with ``PYTHONPATH`` set to its tree, so both sides see
the same machine noise and neither sees the other's allocator state.  Prints the median and the
fastest forward+backward (or forward) time of each side and their ratios A/B (> 1: B faster).

    git worktree add --detach /tmp/base <commit>
    python benchmarks/ab_compare.py --a /tmp/base --b . --configs denoise-384 denoise-1536
    python benchmarks/ab_compare.py --a . --b . --b-keep-freed-memory   # one tree, allocator off/on
    python benchmarks/ab_compare.py --a /tmp/base --b . --nodes 16 --ops  # fixed cost, op counts

Configurations are the ones of ``peer_comparison.py``; ``--nodes`` overrides their size.
``packed-mixed`` times ``forward_packed`` on one 384-node graph with 40 of 24 nodes.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def worker(name: str, nodes: int | None, backward: bool, keep_freed: bool, count_ops: bool) -> None:
    """Build the configuration, report where ``equiformer`` came from, then time one step per
    ``go`` line on stdin."""
    if keep_freed:
        from equiformer.training.allocator import keep_freed_memory

        if not keep_freed_memory():
            sys.exit("keep_freed_memory() did not apply on this platform")
    import equiformer

    sys.path.insert(0, str(HERE))
    from peer_comparison import CONFIGS, QUICK, build, inputs, step

    if name in PACKED:
        config, sizes = PACKED[name]
        model = build("ours", config, torch.device("cpu"))
        data, step = packed_inputs(sizes), packed_step
    else:
        config, n = {**CONFIGS, **QUICK}[name]
        data = inputs(nodes or n, torch.device("cpu"))
        model = build("ours", config, torch.device("cpu"))
    for _ in range(2):
        step(model, *data, backward=True)
    forward = model.forward_packed if name in PACKED else model
    ops = count_forward_ops(forward, data) if count_ops else None
    print(json.dumps({"source": str(Path(equiformer.__file__).resolve().parent.parent), "ops": ops}), flush=True)
    for _ in sys.stdin:
        t0 = time.perf_counter()
        step(model, *data, backward=backward)
        print(time.perf_counter() - t0, flush=True)


def _packed_configs() -> dict:
    """Packed batches of mixed sizes (``forward_packed``): one chain-sized graph among small ones."""
    sys.path.insert(0, str(HERE))
    from peer_comparison import DENOISE

    return {"packed-mixed": (DENOISE, [384] + [24] * 40), "packed-quick": ({**DENOISE, "depth": 2}, [48] + [8] * 6)}


PACKED = _packed_configs()


def packed_inputs(sizes: list[int]) -> tuple:
    g = torch.Generator().manual_seed(1)
    n = sum(sizes)
    tokens = torch.randint(0, 24, (n,), generator=g)
    coors = torch.cat([torch.randn(s, 3, generator=g) * 2 * s ** (1 / 3) for s in sizes])  # ~ protein density
    graph_index = torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes))
    return tokens, coors, graph_index


def packed_step(model, tokens, coors, graph_index, backward: bool) -> None:
    if backward:
        out = model.forward_packed(tokens, coors, graph_index)
        (out.type0.sum() + out.type1.sum()).backward()
    else:
        with torch.no_grad():
            model.forward_packed(tokens, coors, graph_index)


def count_forward_ops(forward, data) -> int:
    """ATen operations dispatched by one forward with gradients enabled."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Counter.count += 1
            return func(*args, **(kwargs or {}))

    with Counter():
        forward(*data)
    return Counter.count


def start_worker(tree: Path, args, name: str, keep_freed: bool) -> tuple[subprocess.Popen, dict]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, __file__, "--worker", name, "--mode", args.mode]
    cmd += ["--nodes", str(args.nodes)] if args.nodes else []
    cmd += ["--worker-keep-freed"] if keep_freed else []
    cmd += ["--ops"] if args.ops else []
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    info = json.loads(proc.stdout.readline())
    if Path(info["source"]) != tree:
        proc.kill()
        sys.exit(f"worker for {tree} imported equiformer from {info['source']}: is another copy installed?")
    return proc, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", type=Path, help="source tree A (default: this repository)")
    parser.add_argument("--b", type=Path, help="source tree B (default: this repository)")
    parser.add_argument("--configs", nargs="*", default=["denoise-384", "denoise-1536", "readme-128", "readme-1024"])
    parser.add_argument("--nodes", type=int, help="override the configurations' node count")
    parser.add_argument("--mode", choices=["bwd", "fwd"], default="bwd", help="forward+backward or forward only")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--a-keep-freed-memory", action="store_true", help="side A runs with denoise.py's allocator setting")
    parser.add_argument("--b-keep-freed-memory", action="store_true", help="side B likewise")
    parser.add_argument("--ops", action="store_true", help="also count ATen operations per forward")
    parser.add_argument("--quick", action="store_true", help="tiny configuration, few repeats (smoke run)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-keep-freed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.nodes, args.mode == "bwd", args.worker_keep_freed, args.ops)
        return
    repo = HERE.parent
    trees = {"A": (args.a or repo).resolve(), "B": (args.b or repo).resolve()}
    keep = {"A": args.a_keep_freed_memory, "B": args.b_keep_freed_memory}
    configs, repeats = (["denoise-quick"], 3) if args.quick else (args.configs, args.repeats)
    sys.path.insert(0, str(HERE))
    from common import machine_line

    print(machine_line(torch.device("cpu")))
    for side in "AB":
        print(f"{side}: {trees[side]}{' (keep_freed_memory)' if keep[side] else ''}")
    for name in configs:
        workers = {side: start_worker(trees[side], args, name, keep[side]) for side in "AB"}
        times = {side: [] for side in "AB"}
        for _ in range(repeats):
            for side, (proc, _) in workers.items():
                proc.stdin.write("go\n")
                proc.stdin.flush()
                times[side].append(float(proc.stdout.readline()) * 1e3)
        for proc, _ in workers.values():
            proc.stdin.close()
            proc.wait()
        med = {side: statistics.median(t) for side, t in times.items()}
        low = {side: min(t) for side, t in times.items()}
        size = f" n={args.nodes}" if args.nodes else ""
        print(f"{name}{size} {args.mode}: median A {med['A']:.1f} ms B {med['B']:.1f} ms A/B {med['A'] / med['B']:.2f}; "
              f"fastest A {low['A']:.1f} ms B {low['B']:.1f} ms A/B {low['A'] / low['B']:.2f}")
        if args.ops:
            print(f"{name}{size} forward ops: A {workers['A'][1]['ops']} B {workers['B'][1]['ops']}")


if __name__ == "__main__":
    main()
