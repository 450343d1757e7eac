"""Padding and out-of-radius nodes must not influence real nodes at all."""
import pytest
import torch

from model_factory import make_inputs, make_model


@pytest.mark.parametrize("attention", ["mlp", "l2"])
@pytest.mark.parametrize("path", ["so2", "cg"])
def test_padded_nodes_change_nothing(attention, path):
    model = make_model(l2_dist_attention=attention == "l2", tensor_product=path, num_linear_attn_heads=2, input_degrees=2, dim_in=(5, 3))
    feats, coors, mask = make_inputs(model, n=18, mask_fraction=0.3)
    assert (~mask).any()
    base = model(feats, coors, mask)
    g = torch.Generator().manual_seed(9)
    pad = ~mask
    feats2 = {k: v.clone() for k, v in feats.items()}
    coors2 = coors.clone()
    feats2[0][pad] = 100 * torch.randn(feats2[0][pad].shape, dtype=torch.float64, generator=g)
    feats2[1][pad] = 100 * torch.randn(feats2[1][pad].shape, dtype=torch.float64, generator=g)
    coors2[pad] = 0.01 * torch.randn(coors2[pad].shape, dtype=torch.float64, generator=g) + coors[mask][:1]
    moved = model(feats2, coors2, mask)
    for a, b in [(base.type0, moved.type0), (base.type1, moved.type1), (base.type2, moved.type2)]:
        assert (a[mask] - b[mask]).abs().max() <= 1e-12
        assert (b[~mask] == 0).all()


@pytest.mark.parametrize("attention", ["mlp", "l2"])
def test_nodes_beyond_valid_radius_contribute_nothing(attention):
    model = make_model(l2_dist_attention=attention == "l2", valid_radius=2.0, num_neighbors=float("inf"))
    feats, coors, _ = make_inputs(model, b=1, n=10)
    coors = coors * 0.3  # a tight cluster
    far = coors.clone()
    far[0, -1] = torch.tensor([50.0, 0.0, 0.0], dtype=torch.float64)
    mask = torch.ones(1, 10, dtype=torch.bool)
    base = model(feats, far, mask)
    # move the far node (and change its features): nobody else may notice
    far2 = far.clone()
    far2[0, -1] = torch.tensor([0.0, -40.0, 7.0], dtype=torch.float64)
    feats2 = {0: feats[0].clone()}
    feats2[0][0, -1] += 5
    moved = model(feats2, far2, mask)
    assert (base.type0[0, :-1] - moved.type0[0, :-1]).abs().max() <= 1e-12
    assert (base.type1[0, :-1] - moved.type1[0, :-1]).abs().max() <= 1e-12
    # ...and a node inside the radius does matter (the test can fail)
    near = far.clone()
    near[0, -1] = coors[0, 0] + 0.5
    assert (model(feats, near, mask).type0[0, :-1] - base.type0[0, :-1]).abs().max() > 1e-6


def test_fully_masked_batch_element_is_zero_and_harmless():
    model = make_model()
    feats, coors, mask = make_inputs(model, b=2, n=8)
    mask[1] = False
    out = model(feats, coors, mask)
    assert (out.type0[1] == 0).all() and (out.type1[1] == 0).all()
    alone = model({0: feats[0][:1]}, coors[:1], mask[:1])
    assert (alone.type0 - out.type0[:1]).abs().max() <= 1e-12


@pytest.mark.parametrize("b,n", [(2, 0), (0, 5), (0, 0)], ids=["no-nodes", "no-graphs", "nothing"])
def test_empty_batches_return_empty_outputs(b, n):
    """Zero nodes or zero graphs: outputs (and coordinate gradients) of the matching empty shapes,
    as a data loader's last, empty batch needs."""
    model = make_model(input_degrees=2, dim_in=(5, 3), attend_sparse_neighbors=True, num_adj_degrees_embed=2)
    feats = {0: torch.zeros(b, n, 5, dtype=torch.float64), 1: torch.zeros(b, n, 3, 3, dtype=torch.float64)}
    coors = torch.zeros(b, n, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(b, n, dtype=torch.bool)
    out = model(feats, coors, mask, adj_mat=torch.zeros(b, n, n, dtype=torch.bool))
    assert out.type0.shape == (b, n, model.dim[0]) and out.type2.shape == (b, n, model.dim[2], 5)
    (out.type0.sum() + out.type1.sum()).backward()
    assert coors.grad.shape == (b, n, 3)
    pooled = model(feats, coors, mask, adj_mat=torch.zeros(b, n, n, dtype=torch.bool), return_pooled=True)
    assert pooled.type1.shape == (b, model.dim[1], 3) and (pooled.type1 == 0).all()
