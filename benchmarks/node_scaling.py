"""Time and peak memory against the number of nodes, at a fixed number of neighbours.

Each size runs in a fresh subprocess so that its peak RSS is its own.  Nodes are spread at a
protein-like density (one per ~10 cubic Angstrom).

    python benchmarks/node_scaling.py [--sizes 1000 2000 ...] [--backward-max 20000] [--quick]
                                      [--reversible] [--edge-chunk-size 32768]

``--reversible`` and ``--edge-chunk-size`` are the two memory levers for very large graphs:
activation memory flat in depth, and edge activations bounded by the chunk instead of E.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, peak_memory_since, peak_rss_mb, pick_device, run_measurement, start_memory, sync  # noqa: E402

CONFIG = dict(dim=32, num_degrees=3, heads=4, dim_head=8, depth=2, num_neighbors=16, num_tokens=24, reduce_dim_out=True)


def run_one(n: int, backward: bool, device_name: str, config: dict) -> dict:
    from equiformer import Equiformer

    device = pick_device(device_name)
    torch.manual_seed(0)
    model = Equiformer(**config).to(device)
    warm = torch.randint(0, 24, (1, 64), device=device)
    model(warm, torch.rand(1, 64, 3, device=device) * 8).type1.sum().backward()  # first-call set-up
    model.zero_grad(set_to_none=True)
    side = (10.0 * n) ** (1 / 3)
    feats = torch.randint(0, 24, (1, n), device=device)
    coors = torch.rand(1, n, 3, device=device) * side
    base = start_memory(device)
    sync(device)
    t0 = time.perf_counter()
    if backward:
        out = model(feats, coors)
        out.type1.sum().backward()
    else:
        with torch.no_grad():
            model(feats, coors)
    sync(device)
    seconds = time.perf_counter() - t0
    peak = peak_memory_since(device, base)
    total = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else peak_rss_mb()
    return {"seconds": seconds, "peak_mb": peak, "total_peak_mb": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="*", type=int, default=[1000, 2000, 4000, 8000, 16000, 20000, 32000, 64000])
    parser.add_argument("--backward-max", type=int, default=20000, help="largest n timed with backward")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reversible", action="store_true", help="reversible blocks")
    parser.add_argument("--edge-chunk-size", type=int, default=None, help="process edges in chunks of this many")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    config = {**CONFIG, "reversible": args.reversible, "edge_chunk_size": args.edge_chunk_size}
    if args.one:
        print(json.dumps(run_one(int(args.one[0]), args.one[1] == "bwd", args.device, config)))
        return
    sizes = [200, 400] if args.quick else args.sizes
    print(machine_line(pick_device(args.device)))
    print(f"config: {config}")
    print(f"{'n':>7} {'pass':>8} {'seconds':>9} {'peak MB':>9} {'process peak MB':>16} {'KB/node':>8}")
    for n in sizes:
        for mode in ("fwd", "bwd"):
            if mode == "bwd" and n > args.backward_max:
                continue
            cmd = [sys.executable, __file__, "--one", str(n), mode, "--device", args.device]
            cmd += ["--reversible"] * args.reversible
            cmd += ["--edge-chunk-size", str(args.edge_chunk_size)] if args.edge_chunk_size else []
            out = run_measurement(cmd)
            if out.returncode != 0:
                print(f"{n:>7} {mode:>8} failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            name = "fwd" if mode == "fwd" else "fwd+bwd"
            print(f"{n:>7} {name:>8} {r['seconds']:>9.2f} {r['peak_mb']:>9.0f} {r['total_peak_mb']:>16.0f} {1024 * r['peak_mb'] / n:>8.1f}")


if __name__ == "__main__":
    main()
