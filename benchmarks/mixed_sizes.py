"""Graphs of very different sizes in one packed call: neighbour search by size groups against
the search padded to the largest graph, alternated in one run.

The batch is one protein-sized graph with many small molecules.  Padding every graph to the
largest one makes the exhaustive search compare ``B * n_max^2`` pairs; grouping graphs by
``ceil(log2(size))`` compares at most 4x the pairs the graphs really have.  Times the search
alone (``knn_edges``) and a whole ``forward_packed`` (denoise-like model, k = 16).

    python benchmarks/mixed_sizes.py [--large 1500] [--small 20] [--count 499] [--device auto] [--quick]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, pick_device, time_fn  # noqa: E402

import equiformer.graph as graph_module  # noqa: E402
from equiformer import Equiformer  # noqa: E402


class padded_search:
    """Within this context the search pads every graph to the largest (no size groups)."""

    def __enter__(self):
        self.original = graph_module.size_groups
        graph_module.size_groups = lambda mask: None

    def __exit__(self, *exc):
        graph_module.size_groups = self.original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large", type=int, default=1500, help="nodes of the one large graph")
    parser.add_argument("--small", type=int, default=20, help="nodes of each small graph")
    parser.add_argument("--count", type=int, default=499, help="number of small graphs")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.large, args.small, args.count = 200, 6, 40
    device = pick_device(args.device)
    print(machine_line(device))
    sizes = [args.large] + [args.small] * args.count
    g = torch.Generator().manual_seed(0)
    coors = torch.cat([torch.randn(s, 3, generator=g) * 2 * s ** (1 / 3) for s in sizes]).to(device)  # ~ protein density
    graph_index = torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes)).to(device)
    tokens = torch.randint(0, 24, (sum(sizes),), generator=g).to(device)
    b, n = len(sizes), max(sizes)
    pos = torch.zeros(b, n, 3, device=device)
    mask = torch.zeros(b, n, dtype=torch.bool, device=device)
    start = 0
    for i, s in enumerate(sizes):
        pos[i, :s], mask[i, :s] = coors[start : start + s], True
        start += s
    torch.manual_seed(0)
    model = Equiformer(num_tokens=24, dim=(16, 8, 8, 8), dim_head=(16, 8, 8, 8), heads=(4, 2, 2, 2), depth=2,
                       num_neighbors=16, num_degrees=4, reduce_dim_out=True).to(device)

    def search():
        return graph_module.knn_edges(pos, mask, 16, float("inf"))

    def forward():
        with torch.no_grad():
            return model.forward_packed(tokens, coors, graph_index)

    grouped_edges = {tuple(p) for p in torch.stack(search()).T.tolist()}
    with padded_search():
        padded_edges = {tuple(p) for p in torch.stack(search()).T.tolist()}
    if grouped_edges != padded_edges:
        sys.exit("the grouped and padded searches found different edges: not a valid comparison")
    print(f"{len(sizes)} graphs, {sum(sizes)} nodes (1 x {args.large}, {args.count} x {args.small}), "
          f"{len(grouped_edges)} edges (k = 16); padded layout {b} x {n}")
    print(f"{'':>18} {'grouped ms':>11} {'padded ms':>10} {'padded/grouped':>15}")
    repeats = 3 if args.quick else 5
    for name, fn in [("search", search), ("forward_packed", forward)]:
        grouped = time_fn(fn, device, repeats=repeats, warmup=1)
        with padded_search():
            padded = time_fn(fn, device, repeats=repeats, warmup=1)
        print(f"{name:>18} {grouped * 1e3:>11.1f} {padded * 1e3:>10.1f} {padded / grouped:>14.1f}x")


if __name__ == "__main__":
    main()
