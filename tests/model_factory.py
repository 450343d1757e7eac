"""Shared builders for model tests: small configurations, random inputs, randomised weights."""
import torch

from equiformer import Equiformer
from equiformer.testing import randomize_parameters


def chain_adjacency(n: int) -> torch.Tensor:
    i = torch.arange(n)
    return (i[:, None] - i[None, :]).abs() == 1


def make_model(dtype=torch.float64, seed=0, **overrides) -> Equiformer:
    """A small model exercising every degree, with every weight moved off its initial value."""
    torch.manual_seed(seed)
    config = dict(
        dim=(8, 6, 4),
        dim_in=5,
        num_degrees=3,
        heads=(2, 2, 1),
        dim_head=(4, 3, 2),
        depth=2,
        num_neighbors=6,
        valid_radius=2.5,
    )
    config.update(overrides)
    model = Equiformer(**config).to(dtype)
    randomize_parameters(model, generator=torch.Generator().manual_seed(seed + 1))
    return model


def make_inputs(model: Equiformer, b=2, n=20, dtype=torch.float64, seed=0, mask_fraction=0.2):
    g = torch.Generator().manual_seed(seed)
    feats = {0: torch.randn(b, n, model.dim_in[0], dtype=dtype, generator=g)}
    for l in range(1, model.input_degrees):
        feats[l] = torch.randn(b, n, model.dim_in[l], 2 * l + 1, dtype=dtype, generator=g)
    coors = torch.randn(b, n, 3, dtype=dtype, generator=g)
    mask = torch.rand(b, n, generator=g) > mask_fraction
    mask[:, 0] = True
    return feats, coors, mask


