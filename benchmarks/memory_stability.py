"""Memory stability: many forward + backward calls on the CPU must not grow the process.

A leak (a cache keyed by tensors, graphs kept alive by a module attribute, lists that grow per
call) shows as resident memory that keeps rising after the first calls.  This runs a small
denoise-like model ``--iterations`` times (new coordinates every call, as in training, with an
optimizer step) and prints the peak RSS after ``--warmup`` calls and at the end, with the current
RSS at a few checkpoints in between.

    python benchmarks/memory_stability.py [--iterations 200] [--warmup 20] [--nodes 64] [--reversible] [--quick]
"""
from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, peak_rss_mb  # noqa: E402

from equiformer import Equiformer  # noqa: E402


def current_rss_mb() -> float:
    """Resident set size now (``/proc/self/statm``; pages of 4 KiB on Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def chain(n: int) -> torch.Tensor:
    i = torch.arange(n)
    return (i[:, None] - i[None, :]).abs() == 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--reversible", action="store_true", help="reversible blocks (default: residual)")
    parser.add_argument("--quick", action="store_true", help="a few tiny calls, for a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.iterations, args.warmup, args.nodes = 6, 2, 16

    torch.manual_seed(0)
    model = Equiformer(
        num_tokens=84, dim=(16, 8, 8), num_degrees=3, heads=2, dim_head=8, depth=2,
        attend_sparse_neighbors=True, num_adj_degrees_embed=2, num_neighbors=8, valid_radius=10.0,
        reduce_dim_out=True, l2_dist_attention=False, reversible=args.reversible,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(1)
    b, n = args.batch, args.nodes
    tokens = torch.randint(0, 84, (b, n), generator=g)
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[1:, n * 3 // 4 :] = False
    adj = chain(n)

    print(machine_line(torch.device("cpu")))
    print(f"config: dim (16, 8, 8), depth 2, {b} x {n} nodes, reversible={args.reversible}; "
          f"{args.iterations} forward+backward+step calls")
    checkpoints = {args.warmup, args.iterations // 2, args.iterations * 3 // 4, args.iterations}
    after_warmup = None
    for step in range(1, args.iterations + 1):
        coors = 1.5 * torch.randn(b, n, 3, generator=g).cumsum(1)  # a fresh chain every call
        out = model(tokens, coors, mask, adj_mat=adj)
        loss = out.type1.pow(2).mean() + out.type0.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        del out, loss, coors
        if step in checkpoints:
            gc.collect()
            print(f"after {step:4d} calls: peak RSS {peak_rss_mb():8.1f} MB, current RSS {current_rss_mb():8.1f} MB")
            if step == args.warmup:
                after_warmup = peak_rss_mb()
    growth = peak_rss_mb() - after_warmup
    print(f"peak RSS growth after warm-up: {growth:+.1f} MB over {args.iterations - args.warmup} calls")


if __name__ == "__main__":
    main()
