"""Graphs of very different sizes in one call: one protein-sized graph with many small molecules.

Search: ``knn_edges`` on the padded batch, with graphs grouped by size (the default) and padded
to the largest graph (``by_size=False``: ``B * n_max^2`` pairs compared), and ``packed_knn_edges``
on the packed nodes; all three must find the same edges.  Model: ``forward_packed`` (nothing
padded) against ``forward`` on the equivalent padded batch with a mask (inputs, coordinates and
id maps padded to ``B x n_max`` slots).  Each pair is timed back to back in one run.

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
    padded_tokens = torch.zeros(b, n, dtype=torch.long, device=device)
    padded_tokens[mask] = tokens

    def edge_set(edges):
        return {tuple(p) for p in torch.stack(edges).T.tolist()}

    searches = {
        "grouped": lambda: graph_module.knn_edges(pos, mask, 16, float("inf")),
        "padded": lambda: graph_module.knn_edges(pos, mask, 16, float("inf"), by_size=False),
    }
    flat_ids = mask.reshape(-1).nonzero().flatten()  # padded-flat id of every packed node
    packed = graph_module.packed_knn_edges(coors, graph_index, 16, float("inf"))
    reference = edge_set(searches["padded"]())
    if edge_set(searches["grouped"]()) != reference or edge_set((flat_ids[packed[0]], flat_ids[packed[1]])) != reference:
        sys.exit("the searches found different edges: not a valid comparison")
    print(f"{len(sizes)} graphs, {sum(sizes)} nodes (1 x {args.large}, {args.count} x {args.small}), "
          f"{len(reference)} edges (k = 16); padded layout {b} x {n} = {b * n} slots")
    repeats = 3 if args.quick else 5

    def forward_packed():
        with torch.no_grad():
            return model.forward_packed(tokens, coors, graph_index)

    def forward_padded():
        with torch.no_grad():
            return model(padded_tokens, pos, mask)

    rows = [
        ("search", searches["grouped"], "padded", searches["padded"]),
        ("packed search", lambda: graph_module.packed_knn_edges(coors, graph_index, 16, float("inf")), "padded", searches["padded"]),
        ("forward_packed", forward_packed, "forward", forward_padded),
    ]
    print(f"{'':>16} {'ms':>9} {'against':>9} {'ms':>9} {'ratio':>8}")
    for name, fn, other_name, other in rows:
        ours = time_fn(fn, device, repeats=repeats, warmup=1)
        theirs = time_fn(other, device, repeats=repeats, warmup=1)
        print(f"{name:>16} {ours * 1e3:>9.1f} {other_name:>9} {theirs * 1e3:>9.1f} {theirs / ours:>7.1f}x")


if __name__ == "__main__":
    main()
