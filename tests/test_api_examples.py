"""The four usages in shared/API-EXAMPLES.md, run as written (CPU)."""
import pytest
import torch

from equiformer import Equiformer
from equiformer.testing import randomize_parameters


def test_basic_tokens_in_invariant_and_equivariant_out():
    model = Equiformer(
        num_tokens=24,
        dim=(4, 4, 2),
        dim_head=(4, 4, 4),
        heads=(2, 2, 2),
        num_linear_attn_heads=0,
        num_degrees=3,
        depth=4,
        attend_self=True,
        reduce_dim_out=True,
        l2_dist_attention=False,
    )
    feats = torch.randint(0, 24, (1, 128))
    coors = torch.randn(1, 128, 3)
    mask = torch.ones(1, 128).bool()
    out = model(feats, coors, mask)
    assert out.type0.shape == (1, 128)
    assert out.type1.shape == (1, 128, 3)
    type0, type1 = out  # unpacks like equiformer-pytorch's namedtuple
    assert type0 is out.type0 and type1 is out.type1


def test_reversible_depth_48_backward():
    torch.manual_seed(0)
    model = Equiformer(num_tokens=24, dim=(4, 4, 2), dim_head=(4, 4, 4), heads=(2, 2, 2), num_degrees=3, depth=48, reversible=True)
    randomize_parameters(model, generator=torch.Generator().manual_seed(0))  # blocks are identities at init
    feats = torch.randint(0, 24, (1, 32))
    out = model(feats, torch.randn(1, 32, 3), torch.ones(1, 32).bool())
    out.type0.sum().backward()
    block_grads = [p.grad for p in model.blocks.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in block_grads)
    assert sum(bool(g.abs().max() > 0) for g in block_grads) > len(block_grads) // 2  # the blocks do work
    assert model.token_emb.weight.grad.abs().sum() > 0
    assert out.type0.shape == (1, 32, 4) and out.type1.shape == (1, 32, 4, 3)


def test_edges_such_as_bond_types():
    model = Equiformer(num_tokens=28, dim=64, num_edge_tokens=4, edge_dim=16, depth=2, input_degrees=1, num_degrees=3, reduce_dim_out=True)
    atoms = torch.randint(0, 28, (2, 32))
    bonds = torch.randint(0, 4, (2, 32, 32))
    coors = torch.randn(2, 32, 3)
    mask = torch.ones(2, 32).bool()
    out = model(atoms, coors, mask, edges=bonds)
    assert out.type0.shape == (2, 32)
    assert out.type1.shape == (2, 32, 3)


def test_adjacency_sparse_neighbours_and_hops():
    model = Equiformer(
        dim=32,
        heads=8,
        depth=1,
        dim_head=64,
        num_degrees=2,
        valid_radius=10,
        reduce_dim_out=True,
        attend_sparse_neighbors=True,
        num_neighbors=0,
        num_adj_degrees_embed=2,
        max_sparse_neighbors=8,
    )
    feats = torch.randn(1, 128, 32)
    coors = torch.randn(1, 128, 3)
    mask = torch.ones(1, 128).bool()
    i = torch.arange(128)
    adj_mat = (i[:, None] <= (i[None, :] + 1)) & (i[:, None] >= (i[None, :] - 1))
    out = model(feats, coors, mask, adj_mat=adj_mat)
    assert out.type0.shape == (1, 128)
    assert out.type1.shape == (1, 128, 3)


def test_degree_dict_inputs_and_higher_outputs():
    model = Equiformer(dim=(8, 4, 4), dim_in=(3, 2), num_degrees=3, input_degrees=2, depth=1, heads=2, dim_head=4)
    feats = {0: torch.randn(2, 10, 3), 1: torch.randn(2, 10, 2, 3)}
    out = model(feats, torch.randn(2, 10, 3))
    assert out.type0.shape == (2, 10, 8) and out.type1.shape == (2, 10, 4, 3)
    assert out.type2.shape == (2, 10, 4, 5) and out.degrees[2] is out.type2
    # only the model's degrees are attributes; namedtuple methods keep the higher ones
    assert not hasattr(out, "type3") and not hasattr(out, "type02")
    doubled = out._replace(type0=2 * out.type0)
    assert torch.equal(doubled.type0, 2 * out.type0) and doubled.type2 is out.type2 and doubled.type1 is out.type1
    with pytest.raises(ValueError, match="type5"):
        out._replace(type5=out.type0)


def test_peer_attributes_and_keywords():
    """``model.device`` and ``init_out_zero`` (equiformer-pytorch passes it to the attention
    layers): True starts every attention output projection at zero, False does not."""
    kwargs = dict(dim=(8, 4), num_degrees=2, depth=2, heads=2, dim_head=4)
    zero, random = Equiformer(**kwargs), Equiformer(**kwargs, init_out_zero=False)
    assert zero.device == torch.device("cpu") and zero.config.init_out_zero is True
    for model, starts_at_zero in ((zero, True), (random, False)):
        for block in model.blocks.blocks:
            weights = list(block.attn.to_out.parameters())
            assert all(bool((w == 0).all()) == starts_at_zero for w in weights)
    assert Equiformer.from_config(random.config).config.init_out_zero is False


def test_return_pooled_is_a_masked_mean():
    torch.manual_seed(0)
    model = Equiformer(dim=8, num_degrees=2, depth=1, heads=2, dim_head=4, reduce_dim_out=True)
    feats, coors = torch.randn(2, 12, 8), torch.randn(2, 12, 3)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 7:] = False
    full = model(feats, coors, mask)
    pooled = model(feats, coors, mask, return_pooled=True)
    assert pooled.type0.shape == (2,) and pooled.type1.shape == (2, 3)
    assert torch.allclose(pooled.type1[1], full.type1[1, :7].mean(0), atol=1e-6)
