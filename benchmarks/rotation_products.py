"""Batched rotation products ``(E, R, R) @ (E, R, C)``: direct versus computed transposed.

Forward+backward (gradient for the features only, as in the model when the frames need none),
median of repeats, for a grid of matrix sizes R and channel counts C.  The last column is what
``EdgeGeometry`` picks (``equiformer.nn.rotation_kernels.apply_rotation``), so this script is the
evidence for its thresholds.

    python benchmarks/rotation_products.py [--edges 16384] [--quick]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, time_fn  # noqa: E402

from equiformer.nn.rotation_kernels import apply_rotation, transposed_product  # noqa: E402


def direct(d, x):
    return d @ x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edges", type=int, default=16384)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    edges, rows, channels = (512, (3, 17), (4,)) if args.quick else (args.edges, (3, 5, 7, 9, 12, 15, 17, 19), (2, 4, 8, 16))
    print(machine_line(torch.device("cpu")))
    print(f"edges={edges}, forward+backward ms")
    print(f"{'R':>3} {'C':>3} {'direct':>8} {'transp.':>8} {'direct/transp.':>15}  picked")
    g = torch.Generator().manual_seed(0)
    for r in rows:
        for c in channels:
            d = torch.randn(edges, r, r, generator=g)
            x = torch.randn(edges, r * c, generator=g, requires_grad=True)
            grad = torch.randn(edges, r * c, generator=g)

            def run(product):
                product(d, x.view(edges, r, c)).reshape(edges, r * c).backward(grad)

            t_direct = time_fn(lambda: run(direct), torch.device("cpu"), repeats=7)
            t_transposed = time_fn(lambda: run(transposed_product), torch.device("cpu"), repeats=7)
            probe = apply_rotation(d[:1], x.detach()[:1].view(1, r, c))
            picked = "transposed" if not probe.is_contiguous() else "direct"
            print(f"{r:>3} {c:>3} {t_direct * 1e3:>8.2f} {t_transposed * 1e3:>8.2f} {t_direct / t_transposed:>15.2f}  {picked}")


if __name__ == "__main__":
    main()
