"""Seeded random constructor configurations: every option mixed with every other, each model
checked for E(3)/SE(3) equivariance, packed = padded outputs and finite first and second
derivatives.  Longer throwaway runs of a sampler like this one (450 float64 configurations, more
in float32 and bf16) found the edge-chunk, double-backward and half-precision bugs that this
suite's other tests now cover."""
import math
import random

import pytest
import torch

from equiformer import Equiformer
from equiformer.testing import randomize_parameters
from model_factory import assert_model_equivariant, chain_adjacency

SEEDS = range(12)


def random_config(rng: random.Random) -> dict:
    degrees = rng.randint(1, 4)

    def fiber(lo: int, hi: int):
        if rng.random() < 0.3:
            return rng.randint(lo, hi)  # one value for every degree
        return tuple(rng.randint(lo, hi) for _ in range(degrees))

    config = dict(
        dim=fiber(1, 12), num_degrees=degrees, heads=fiber(1, 3), dim_head=fiber(1, 6), depth=rng.randint(1, 2),
        l2_dist_attention=rng.random() < 0.5, attend_self=rng.random() < 0.7, single_headed_kv=rng.random() < 0.3,
        reversible=rng.random() < 0.3, gate_attn_head_outputs=rng.random() < 0.7,
        num_linear_attn_heads=rng.choice([0, 0, 1, 2]), tensor_product=rng.choice(["so2", "so2", "cg"]),
        reflection_equivariance=rng.random() < 0.3, ff_include_htype_norms=rng.random() < 0.3,
        reduce_dim_out=rng.random() < 0.3, num_neighbors=rng.choice([math.inf, 3, 5, 8]),
        valid_radius=rng.choice([1e5, 2.0, 3.0]),
    )
    config["input_degrees"] = rng.randint(1, degrees)
    config["dim_in"] = tuple(rng.randint(1, 6) for _ in range(config["input_degrees"]))
    if rng.random() < 0.3:
        config.update(num_edge_tokens=rng.randint(2, 4), edge_dim=rng.randint(2, 6))
    if rng.random() < 0.3:
        config["attend_sparse_neighbors"] = True
    if rng.random() < 0.3:
        # no cap below the chain's hop count: a capped adjacency is sampled at random per call
        config.update(num_adj_degrees_embed=rng.randint(1, 3), adj_dim=rng.choice([0, 2, 4]))
    if rng.random() < 0.2:
        config["edge_chunk_size"] = rng.choice([5, 17, 64])
    return config


@pytest.mark.parametrize("seed", SEEDS)
def test_random_configuration(seed):
    rng = random.Random(seed)
    config = random_config(rng)
    torch.manual_seed(seed)
    model = Equiformer(**config).double()
    randomize_parameters(model, generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed)
    b, n = 2, rng.randint(3, 12)
    feats = {0: torch.randn(b, n, config["dim_in"][0], dtype=torch.float64, generator=g)}
    for l in range(1, config["input_degrees"]):
        feats[l] = torch.randn(b, n, config["dim_in"][l], 2 * l + 1, dtype=torch.float64, generator=g)
    coors = torch.randn(b, n, 3, dtype=torch.float64, generator=g)
    mask = torch.rand(b, n, generator=g) > 0.25
    mask[:, 0] = True
    kwargs = {}
    if config.get("num_edge_tokens"):
        kwargs["edges"] = torch.randint(0, config["num_edge_tokens"], (b, n, n), generator=g)
    if config.get("attend_sparse_neighbors") or config.get("num_adj_degrees_embed"):
        kwargs["adj_mat"] = chain_adjacency(n)

    assert_model_equivariant(model, feats, coors, mask, reflect=config["reflection_equivariance"], tolerance=1e-8,
                             seed=seed, output_scale=1e-3, **kwargs)

    # forces, and a loss on them differentiated again by the parameters
    x = coors.clone().requires_grad_()
    out = model(feats, x, mask, **kwargs)
    (forces,) = torch.autograd.grad(out.type0.sum(), x, create_graph=True)
    assert torch.isfinite(forces).all()
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad((forces * forces).sum(), params, allow_unused=True)
    assert all(gr is None or torch.isfinite(gr).all() for gr in grads)

    # the same nodes packed, in a shuffled order, with the pairs as sparse lists
    node_b, node_i = mask.nonzero(as_tuple=True)
    perm = torch.randperm(node_b.numel(), generator=g)
    node_b, node_i = node_b[perm], node_i[perm]
    packed_id = torch.full((b, n), -1, dtype=torch.long)
    packed_id[node_b, node_i] = torch.arange(node_b.numel())
    packed_kwargs = {}
    if "adj_mat" in kwargs:
        ab, ai, aj = (kwargs["adj_mat"][None] & mask[:, :, None] & mask[:, None, :]).nonzero(as_tuple=True)
        packed_kwargs["adjacency"] = torch.stack([packed_id[ab, ai], packed_id[ab, aj]])
    if "edges" in kwargs:
        tokens = kwargs["edges"]
        eb, ei, ej = ((tokens != 0) & mask[:, :, None] & mask[:, None, :]).nonzero(as_tuple=True)
        packed_kwargs.update(edge_index=torch.stack([packed_id[eb, ei], packed_id[eb, ej]]), edge_attr=tokens[eb, ei, ej])
    packed = model.forward_packed({l: f[node_b, node_i] for l, f in feats.items()}, coors[node_b, node_i], node_b,
                                  **packed_kwargs)
    for l, padded in out.degrees.items():
        assert (padded.detach()[node_b, node_i] - packed.degrees[l]).abs().max() <= 1e-10
