"""Shared builders and checks for model tests: small configurations, random inputs, randomised
weights, equivariance of every output degree."""
import torch

from equiformer import Equiformer
from equiformer.testing import (
    assert_equivariant,
    equivariance_errors,
    random_reflection,
    random_rotation,
    random_translation,
    randomize_parameters,
)


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


def assert_model_equivariant(model, feats: dict, coors, mask=None, reflect=False, tolerance=1e-9, seed=0,
                             output_scale=None, **kwargs):
    """Every output degree transforms with its Wigner-D block (a mirror too if ``reflect``).

    By default ``equiformer.testing.assert_equivariant``: errors relative to each output's
    largest entry.  ``output_scale`` sets a least scale instead: the network's outputs are
    layer-normalised, O(1) whenever they are not zero, and an output that is exactly zero (nodes
    that saw no direction at all) would otherwise turn rounding (1e-13) into an infinite
    relative error."""
    degrees = sorted(feats)

    def fn(*args):
        out = model(dict(zip(degrees, args[:-1])), args[-1], mask, **kwargs)
        return tuple(out.degrees.values())

    args = [feats[l] for l in degrees] + [coors]
    kinds = degrees + ["coords"]
    kinds_out = list(range(model.num_degrees))
    generator = torch.Generator().manual_seed(seed)
    if output_scale is None:
        return assert_equivariant(fn, args, kinds, kinds_out, reflect=reflect, tolerance=tolerance, generator=generator)
    rotation = (random_reflection if reflect else random_rotation)(torch.float64, None, generator)
    translation = random_translation(torch.float64, None, generator)
    relative = equivariance_errors(fn, args, kinds, kinds_out, rotation, translation)
    for l, (y, err) in enumerate(zip(fn(*args), relative)):
        scale = max(y.detach().abs().max().item(), torch.finfo(y.dtype).tiny)
        error = err * scale / max(scale, output_scale)
        assert error <= tolerance, f"degree-{l} output breaks equivariance: error {error:.3e} > {tolerance:.1e}"
    return relative
