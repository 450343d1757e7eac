"""Nearest-neighbour search: the cell grid against the exhaustive search, on two kinds of cloud.

"uniform": nodes spread evenly at protein density (10 A^3 per node); "gaussian": a dense core in
a sparse halo (standard deviation growing as n^(1/3)), where cells hold from one node to dozens
and many halo nodes are resolved only on the grid's coarser passes.  Both searches must find the same
edges (checked); the exhaustive search is skipped above ``--brute-max`` nodes (O(n^2) time).

    python benchmarks/neighbour_search.py [--sizes 2048 4096 16384 65536] [--k 16] [--device auto] [--quick]
    python benchmarks/neighbour_search.py --radius 5   # every node within 5 A (k = inf) instead
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, pick_device, time_fn  # noqa: E402

from equiformer.graph import brute_knn_edges, grid_knn_edges  # noqa: E402


def cloud(kind: str, n: int, generator: torch.Generator) -> torch.Tensor:
    if kind == "uniform":
        return torch.rand(1, n, 3, generator=generator) * (10 * n) ** (1 / 3)
    return torch.randn(1, n, 3, generator=generator) * 10 * (n / 4096) ** (1 / 3)


def edge_keys(edges: tuple[torch.Tensor, torch.Tensor], n: int) -> torch.Tensor:
    return torch.sort(edges[0] * n + edges[1])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 16384, 65536])
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--radius", type=float, default=None, help="search every node within this radius (k = inf)")
    parser.add_argument("--brute-max", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.repeats = [300, 600], 1
    device = pick_device(args.device)
    print(machine_line(device))
    k, radius = (float("inf"), args.radius) if args.radius is not None else (args.k, float("inf"))
    print(f"k = {k}, radius = {radius}; milliseconds, median of {args.repeats}")
    print(f"{'n':>7} {'cloud':>9} {'grid':>9} {'exhaustive':>11} {'ratio':>7}")
    g = torch.Generator().manual_seed(0)
    for n in args.sizes:
        for kind in ("uniform", "gaussian"):
            pos = cloud(kind, n, g).to(device)
            mask = torch.ones(1, n, dtype=torch.bool, device=device)
            search = lambda: grid_knn_edges(pos, mask, k, radius)  # noqa: E731
            found = search()  # also the warm-up
            grid = 1e3 * time_fn(search, device, repeats=args.repeats, warmup=0)
            if n > args.brute_max:
                print(f"{n:>7} {kind:>9} {grid:>9.1f} {'-':>11} {'-':>7}")
                continue
            exhaustive = lambda: brute_knn_edges(pos, mask, k, radius)  # noqa: E731
            reference = exhaustive()
            brute = 1e3 * time_fn(exhaustive, device, repeats=args.repeats, warmup=0)
            if not torch.equal(edge_keys(found, n), edge_keys(reference, n)):
                raise SystemExit(f"grid and exhaustive searches found different edges at n={n} ({kind})")
            print(f"{n:>7} {kind:>9} {grid:>9.1f} {brute:>11.1f} {brute / grid:>6.2f}x")


if __name__ == "__main__":
    main()
