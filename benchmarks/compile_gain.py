"""Forward speed with and without ``torch.compile`` (inference, non-reversible blocks).

Only the attention/feed-forward blocks are compiled (``dynamic=True``: edge counts change with
every input); neighbour search and edge geometry stay eager.  Compile time is reported apart.

    python benchmarks/compile_gain.py [--nodes 512] [--quick]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, pick_device, time_fn  # noqa: E402

from equiformer import Equiformer  # noqa: E402
from equiformer.testing import randomize_parameters  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=512)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    nodes = 64 if args.quick else args.nodes
    device = pick_device(args.device)
    print(machine_line(device))
    torch.manual_seed(0)
    config = dict(num_tokens=24, dim=(16, 8, 8, 8), dim_head=(16, 8, 8, 8), heads=(4, 2, 2, 2), depth=2 if args.quick else 6,
                  num_neighbors=16, num_degrees=4, reduce_dim_out=True)
    model = Equiformer(**config).to(device).eval()
    randomize_parameters(model, generator=torch.Generator().manual_seed(0))  # zero-initialised outputs would compare 0 with 0
    feats = torch.randint(0, 24, (1, nodes), device=device)
    coors = torch.randn(1, nodes, 3, device=device) * 10

    def run():
        with torch.no_grad():
            return model(feats, coors)

    eager = time_fn(run, device)
    reference = run().type1
    model.blocks = torch.compile(model.blocks, dynamic=True)
    t0 = time.perf_counter()
    compiled_out = run().type1
    compile_seconds = time.perf_counter() - t0
    compiled = time_fn(run, device)
    print(f"nodes={nodes} config={config}")
    print(f"eager forward     {eager * 1e3:9.1f} ms")
    print(f"compiled forward  {compiled * 1e3:9.1f} ms   (first call incl. compilation {compile_seconds:.1f} s)")
    error = ((compiled_out - reference).abs().max() / reference.abs().max()).item()
    print(f"gain              {eager / compiled:9.2f}x   max |difference| / max |output| {error:.2e}")
    if not error <= 1e-4:
        sys.exit(f"compiled outputs differ from eager ones (relative {error:.2e}): not a valid speed comparison")


if __name__ == "__main__":
    main()
