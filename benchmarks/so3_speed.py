"""Time spherical harmonics and block Wigner-D matrices for many edges.

    python benchmarks/so3_speed.py [--edges 100000] [--lmax 6] [--device auto] [--quick]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, pick_device, time_fn  # noqa: E402

from equiformer.nn.fiber import layout  # noqa: E402
from equiformer.so3 import (  # noqa: E402
    block_diagonal,
    edge_to_axis_rotation,
    permuted_block_diagonal,
    spherical_harmonics,
    wigner_D,
    wigner_D_block_diagonal,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--edges", type=int, default=100_000)
    parser.add_argument("--lmax", type=int, default=6)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.edges, args.lmax = 2_000, 3
    device, dtype = pick_device(args.device), getattr(torch, args.dtype)
    print(machine_line(device))
    vec = torch.randn(args.edges, 3, device=device, dtype=dtype)
    rot = edge_to_axis_rotation(vec)
    print(f"edges={args.edges} dtype={args.dtype}")
    # the edge-to-axis rotation does not depend on L: timed once
    print(f"edge-to-axis rotation {time_fn(lambda: edge_to_axis_rotation(vec), device) * 1e3:.2f} ms")
    print(f"{'L':>2} {'SH ms':>9} {'Wigner blocks ms':>17} {'block-diag ms':>14} {'SH+grad ms':>11} {'Wigner+grad ms':>15}"
          f" {'permuted 2-pass':>17} {'permuted 1-pass':>15}")
    for lmax in range(1, args.lmax + 1):
        sh = time_fn(lambda: spherical_harmonics(lmax, vec), device)
        wb = time_fn(lambda: wigner_D(lmax, rot), device)
        bd = time_fn(lambda: wigner_D_block_diagonal(lmax, rot), device)
        v = vec.clone().requires_grad_()
        shg = time_fn(lambda: spherical_harmonics(lmax, v).sum().backward(), device)
        # forces: the blocks differentiated through the edge rotation back to the edge vectors
        wg = time_fn(lambda: sum(d.sum() for d in wigner_D(lmax, edge_to_axis_rotation(v))).backward(), device)
        # the SO(2) path's rotation matrix: degrees 1..L with rows in the order-major layout
        blocks = wigner_D(lmax, rot)[1:]
        order = layout((1,) * (lmax + 1)).row_order
        order_tensor = torch.tensor(order, device=device)
        two_pass = time_fn(lambda: block_diagonal(blocks).index_select(1, order_tensor), device)
        one_pass = time_fn(lambda: permuted_block_diagonal(blocks, order), device)
        print(f"{lmax:>2} {sh * 1e3:>9.2f} {wb * 1e3:>17.2f} {bd * 1e3:>14.2f} {shg * 1e3:>11.2f} {wg * 1e3:>15.2f}"
              f" {two_pass * 1e3:>17.2f} {one_pass * 1e3:>15.2f}")


if __name__ == "__main__":
    main()
