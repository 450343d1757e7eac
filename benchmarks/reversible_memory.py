"""Activation memory against depth: reversible blocks stay flat, plain residual blocks grow.

Each (depth, reversible) pair runs in a fresh subprocess; the number is the peak RSS of one
forward+backward above the resident size before it (parameters excluded, so it is activations).

    python benchmarks/reversible_memory.py [--depths 4 32] [--nodes 512] [--quick]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, peak_memory_since, pick_device, run_measurement, start_memory  # noqa: E402


def run_one(depth: int, reversible: bool, nodes: int, device_name: str) -> float:
    from equiformer import Equiformer

    device = pick_device(device_name)
    torch.manual_seed(0)
    model = Equiformer(num_tokens=24, dim=(32, 16, 16), heads=(4, 2, 2), dim_head=(8, 8, 8), num_degrees=3, depth=depth,
                       num_neighbors=16, reversible=reversible, reduce_dim_out=True).to(device)
    model(torch.randint(0, 24, (1, 16), device=device), torch.randn(1, 16, 3, device=device)).type1.sum().backward()
    model.zero_grad(set_to_none=False)  # keep the gradient buffers: what is left to measure is activations
    feats = torch.randint(0, 24, (1, nodes), device=device)
    coors = torch.randn(1, nodes, 3, device=device) * 10
    base = start_memory(device)
    out = model(feats, coors)
    out.type1.sum().backward()
    return peak_memory_since(device, base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", nargs="*", type=int, default=[4, 32])
    parser.add_argument("--nodes", type=int, default=512)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps({"mb": run_one(int(args.one[0]), args.one[1] == "rev", int(args.one[2]), args.device)}))
        return
    depths, nodes = ([2, 4], 64) if args.quick else (args.depths, args.nodes)
    print(machine_line(pick_device(args.device)))
    print(f"nodes={nodes}, activation memory of one forward+backward (MB)")
    print(f"{'depth':>6} {'reversible':>11} {'plain':>9}")
    rows = {}
    for depth in depths:
        row = []
        for mode in ("rev", "plain"):
            out = run_measurement([sys.executable, __file__, "--one", str(depth), mode, str(nodes), "--device", args.device])
            row.append(json.loads(out.stdout.strip().splitlines()[-1])["mb"] if out.returncode == 0 else float("nan"))
        rows[depth] = row
        print(f"{depth:>6} {row[0]:>11.0f} {row[1]:>9.0f}")
    first, last = depths[0], depths[-1]
    print(f"growth {first} -> {last} blocks: reversible {rows[last][0] / rows[first][0]:.2f}x, plain {rows[last][1] / rows[first][1]:.2f}x")


if __name__ == "__main__":
    main()
