import pytest
import torch

from model_factory import chain_adjacency, make_inputs, make_model


@pytest.mark.parametrize("attention", ["mlp", "l2"])
def test_permuting_nodes_permutes_outputs(attention):
    model = make_model(
        l2_dist_attention=attention == "l2",
        num_edge_tokens=3,
        edge_dim=4,
        attend_sparse_neighbors=True,
        num_adj_degrees_embed=2,
        num_linear_attn_heads=1,
    )
    feats, coors, mask = make_inputs(model, b=2, n=14)
    edges = torch.randint(0, 3, (2, 14, 14), generator=torch.Generator().manual_seed(1))
    adj = chain_adjacency(14)
    out = model(feats, coors, mask, adj_mat=adj, edges=edges)
    perm = torch.randperm(14, generator=torch.Generator().manual_seed(2))
    out_p = model(
        {0: feats[0][:, perm]},
        coors[:, perm],
        mask[:, perm],
        adj_mat=adj[perm][:, perm],
        edges=edges[:, perm][:, :, perm],
    )
    for a, b in [(out.type0, out_p.type0), (out.type1, out_p.type1), (out.type2, out_p.type2)]:
        assert (a[:, perm] - b).abs().max() <= 1e-12
