"""Writes the golden checkpoints of ``test_golden.py``: one small model per option, its weights
moved off their initial values, with fixed inputs and the outputs this version computes.

Run once, at the commit that defines the reference numerics (09f1429 for the files here), from
the repository root: ``python tests/golden/make_golden.py``.  Later versions must load every
file strictly and reproduce its outputs; rerunning it on a later commit would hide a change.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here.parent))
from model_factory import chain_adjacency, make_model  # noqa: E402

N, B = 12, 2
BASE = dict(dim=(6, 4, 4), dim_in=5, num_degrees=3, heads=(2, 1, 1), dim_head=(4, 2, 2), depth=2,
            num_neighbors=5, valid_radius=2.5)

# name -> (keywords over BASE, which inputs the forward call takes)
CASES = {
    "l2_so2": (dict(), ()),
    "mlp_so2": (dict(l2_dist_attention=False), ()),
    "l2_cg": (dict(tensor_product="cg"), ()),
    "mlp_cg": (dict(l2_dist_attention=False, tensor_product="cg"), ()),
    "e3": (dict(reflection_equivariance=True, l2_dist_attention=False), ()),
    "reversible": (dict(reversible=True, depth=3), ()),
    "knn_radius": (dict(num_neighbors=3, valid_radius=1.5), ()),
    "linear_heads": (dict(num_linear_attn_heads=2, single_headed_kv=True, gate_attn_head_outputs=False), ()),
    "edge_tokens": (dict(num_edge_tokens=3, edge_dim=2), ("edges",)),
    "edge_features": (dict(edge_dim=3), ("edge_features",)),
    "hops": (dict(attend_sparse_neighbors=True, num_adj_degrees_embed=2, max_sparse_neighbors=4), ("adj",)),
    "hops_embedded": (dict(num_adj_degrees_embed=3, adj_dim=2, num_neighbors=4), ("adj",)),
    "type1_inputs": (dict(input_degrees=2, dim_in=(5, 3)), ()),
    "no_self": (dict(attend_self=False, l2_dist_attention=False), ()),
    "tokens_reduced": (dict(num_tokens=7, num_positions=N, dim_in=None, reduce_dim_out=True), ("tokens",)),
    "ff_out_norms": (dict(reduce_dim_out=True, linear_out=False, ff_include_htype_norms=True, edge_chunk_size=16), ()),
    "uniform_fiber": (dict(dim=(8, 4, 4, 4), num_degrees=4, heads=2, dim_head=3, l2_dist_attention=False), ()),
}


def inputs_for(model, extras, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    coors = torch.randn(B, N, 3, dtype=torch.float64, generator=g) * 1.2
    mask = torch.rand(B, N, generator=g) > 0.2
    mask[:, 0] = True
    if "tokens" in extras:
        feats = {0: torch.randint(0, model.num_tokens, (B, N), generator=g)}
    else:
        feats = {0: torch.randn(B, N, model.dim_in[0], dtype=torch.float64, generator=g)}
    for l in range(1, model.input_degrees):
        feats[l] = torch.randn(B, N, model.dim_in[l], 2 * l + 1, dtype=torch.float64, generator=g)
    kwargs = {}
    if "adj" in extras:
        kwargs["adj_mat"] = chain_adjacency(N)
    if "edges" in extras:
        kwargs["edges"] = torch.randint(0, 3, (B, N, N), generator=g)
    if "edge_features" in extras:
        kwargs["edges"] = torch.randn(B, N, N, model.edge_dim, dtype=torch.float64, generator=g)
    return dict(feats=feats, coors=coors, mask=mask, **kwargs)


def main() -> None:
    out_dir = here / "checkpoints"
    out_dir.mkdir(exist_ok=True)
    for index, (name, (overrides, extras)) in enumerate(CASES.items()):
        config = {**BASE, **overrides}
        config = {k: v for k, v in config.items() if v is not None}
        model = make_model(seed=index, **config)
        inputs = inputs_for(model, extras, seed=100 + index)
        torch.manual_seed(0)  # capped hop edges draw ties at random
        with torch.no_grad():
            out = model(inputs["feats"] if len(inputs["feats"]) > 1 else inputs["feats"][0], inputs["coors"],
                        inputs["mask"], adj_mat=inputs.get("adj_mat"), edges=inputs.get("edges"))
        record = dict(config=model.config.to_dict(), state_dict=model.state_dict(), inputs=inputs,
                      outputs={l: t for l, t in out.degrees.items()})
        torch.save(record, out_dir / f"{name}.pt")
        print(name, sum(t.numel() for t in model.state_dict().values()), "parameters")


if __name__ == "__main__":
    main()
