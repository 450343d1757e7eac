"""Cost of one edge layer against the maximum degree L: SO(2) path versus Clebsch-Gordan path,
and the SO(2) path with its edge frames truncated to orders ``|m| <= mmax``.

An edge layer is what every attention block does per edge: rotate the neighbour's features into
the edge frame, convolve, rotate back (SO(2)); or one Clebsch-Gordan tensor product with the
edge harmonics (CG).  Forward+backward, C channels per degree, median of repeats; the three
variants are timed one after the other at each L.

    python benchmarks/degree_scaling.py [--edges 4096] [--channels 16] [--lmax 6] [--mmax 2] [--quick]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, pick_device, time_fn  # noqa: E402

from equiformer.nn import EdgeConvolution, EdgeGeometry, EdgeLayout, layout  # noqa: E402


def edge_layer(lmax: int, channels: int, edges: int, path: str, device: torch.device, mmax: int | None = None):
    torch.manual_seed(0)
    fiber = (channels,) * (lmax + 1)
    edge_layout = EdgeLayout.for_tensor_product(path, mmax=mmax, lmax=lmax)
    conv = EdgeConvolution(fiber, fiber, edge_layout).to(device)
    vec = torch.randn(edges, 3, device=device)
    idx = torch.arange(edges, device=device)
    geometry = EdgeGeometry.build(
        vec, idx, idx, edges, idx, 1, torch.ones(edges, device=device), torch.zeros(edges, 1, device=device), lmax, edge_layout
    )
    x = torch.randn(edges, layout(fiber).size, device=device, requires_grad=True)
    scale = torch.randn(edges, sum(fiber), device=device)

    def run():
        h = geometry.rotate(x, fiber)
        out = geometry.rotate(conv(h, geometry, scale), fiber, inverse=True)
        out.sum().backward()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edges", type=int, default=4096)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--lmax", type=int, default=6)
    parser.add_argument("--cg-lmax", type=int, default=6, help="largest L for the (slow) CG path")
    parser.add_argument("--mmax", type=int, default=2, help="orders kept by the truncated SO(2) path (default 2)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.edges, args.lmax, args.cg_lmax, args.channels = 256, 3, 3, 4
    device = pick_device(args.device)
    print(machine_line(device))
    print(f"edges={args.edges} channels={args.channels} (forward+backward of rotate -> convolve -> rotate back)")
    m = args.mmax
    print(f"{'L':>2} {'SO(2) ms':>9} {f'mmax={m} ms':>11} {'ratio':>6} {'CG ms':>9} {'CG/SO(2)':>9} {'SO(2) vs L=2':>13} {'L^3 vs L=2':>11}")
    so2_at_2 = None
    faster = {}  # L -> whether SO(2) beat CG
    for lmax in range(1, args.lmax + 1):
        so2 = time_fn(edge_layer(lmax, args.channels, args.edges, "so2", device), device, repeats=3, warmup=1)
        cut = time_fn(edge_layer(lmax, args.channels, args.edges, "so2", device, m), device, repeats=3, warmup=1) if lmax > m else so2
        cg = time_fn(edge_layer(lmax, args.channels, args.edges, "cg", device), device, repeats=3, warmup=1) if lmax <= args.cg_lmax else float("nan")
        if lmax == 2:
            so2_at_2 = so2
        if cg == cg:
            faster[lmax] = cg > so2
        growth = f"{so2 / so2_at_2:>13.1f}" if so2_at_2 else f"{'':>13}"
        cube = f"{(lmax / 2) ** 3:>11.1f}" if lmax >= 2 else f"{'':>11}"
        print(f"{lmax:>2} {so2 * 1e3:>9.2f} {cut * 1e3:>11.2f} {cut / so2:>6.2f} {cg * 1e3:>9.2f} {cg / so2:>9.1f} {growth} {cube}")
    # the smallest L from which SO(2) won at every measured L
    crossover = next((l for l in sorted(faster) if all(faster[m] for m in faster if m >= l)), None)
    print(f"crossover: SO(2) is faster from L = {crossover} on" if crossover else "crossover: not reached")


if __name__ == "__main__":
    main()
