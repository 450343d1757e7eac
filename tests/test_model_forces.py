"""Autograd forces (d output / d coordinates) equal central finite differences, through the edge
frames, harmonics, radial basis and cutoff envelope."""
import pytest
import torch

from model_factory import chain_adjacency, make_inputs, make_model

from equiformer import transforms
from equiformer.transforms import MIN_TORCH_FOR_DISTANCE_SEARCH_UNDER_TRANSFORMS as NEED, torch_release

# the oldest torch this package supports (setup.py) runs every test but these: under it they get
# the clear error that test_old_torch_refuses_transforms_by_name checks instead
needs_transform_search = pytest.mark.skipif(
    torch_release() < NEED, reason=f"torch.func through the distance search needs torch >= {NEED[0]}.{NEED[1]}"
)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(l2_dist_attention=False),
        dict(l2_dist_attention=True),
        dict(tensor_product="cg", l2_dist_attention=False),
        dict(reversible=True, l2_dist_attention=False),
        dict(reflection_equivariance=True, attend_sparse_neighbors=True, num_adj_degrees_embed=2),
    ],
    ids=["mlp-so2", "l2-so2", "mlp-cg", "reversible", "e3-adjacency"],
)
def test_forces_match_finite_differences(overrides):
    model = make_model(valid_radius=3.0, **overrides)
    feats, coors, mask = make_inputs(model, b=1, n=10, mask_fraction=0.0)
    adj = chain_adjacency(10) if overrides.get("attend_sparse_neighbors") else None
    weights = torch.randn(10, dtype=torch.float64, generator=torch.Generator().manual_seed(4))

    def energy(x):
        out = model(feats, x, mask, adj_mat=adj)
        return (out.type0.sum(-1) * weights).sum() + out.type1.pow(2).sum()

    x = coors.clone().requires_grad_()
    (grad,) = torch.autograd.grad(energy(x), x)
    h = 1e-5
    numeric = torch.zeros_like(coors)
    for i in range(10):
        for k in range(3):
            plus, minus = coors.clone(), coors.clone()
            plus[0, i, k] += h
            minus[0, i, k] -= h
            numeric[0, i, k] = (energy(plus) - energy(minus)) / (2 * h)
    relative = (grad - numeric).norm() / numeric.norm()
    assert numeric.norm() > 1e-3
    assert relative <= 1e-6, relative


@pytest.mark.parametrize(
    "overrides",
    [
        dict(l2_dist_attention=False),
        dict(l2_dist_attention=True),
        dict(tensor_product="cg"),
        dict(edge_chunk_size=7),
        dict(reversible=True, l2_dist_attention=False),
        dict(reversible=True, l2_dist_attention=True),
    ],
    ids=["mlp-so2", "l2-so2", "cg", "edge-chunks", "reversible-mlp", "reversible-l2"],
)
def test_training_on_forces_has_exact_parameter_gradients(overrides):
    """A loss on autograd forces (``create_graph=True``) differentiated again by parameters:
    the directional derivative along a random parameter direction equals central differences."""
    model = make_model(valid_radius=3.0, **overrides)
    feats, coors, mask = make_inputs(model, b=1, n=10, mask_fraction=0.0)
    g = torch.Generator().manual_seed(5)
    target = torch.randn(1, 10, 3, dtype=torch.float64, generator=g)
    params = [p for p in model.parameters() if p.requires_grad]
    direction = [torch.randn(p.shape, dtype=p.dtype, generator=g) for p in params]

    def force_loss():
        x = coors.clone().requires_grad_()
        (forces,) = torch.autograd.grad(model(feats, x, mask).type0.sum(), x, create_graph=True)
        return ((forces - target) ** 2).sum()

    # the forces themselves do not depend on whether their graph is kept
    x = coors.clone().requires_grad_()
    (kept,) = torch.autograd.grad(model(feats, x, mask).type0.sum(), x, create_graph=True)
    (plain,) = torch.autograd.grad(model(feats, x, mask).type0.sum(), x)
    assert (kept - plain).abs().max() <= 1e-12 * plain.abs().max()

    grads = torch.autograd.grad(force_loss(), params, allow_unused=True)
    analytic = sum((gr * d).sum() for gr, d in zip(grads, direction) if gr is not None)
    h = 1e-6
    with torch.no_grad():
        for p, d in zip(params, direction):
            p.add_(h * d)
    plus = force_loss().item()
    with torch.no_grad():
        for p, d in zip(params, direction):
            p.sub_(2 * h * d)
    minus = force_loss().item()
    numeric = (plus - minus) / (2 * h)
    assert abs(numeric) > 1e-3
    assert abs(analytic - numeric) <= 1e-6 * abs(numeric), (analytic, numeric)


@pytest.mark.parametrize(
    "overrides",
    [dict(), dict(l2_dist_attention=False), dict(reversible=True), dict(edge_chunk_size=7)],
    ids=["l2", "mlp", "reversible", "edge-chunks"],
)
@needs_transform_search
def test_torch_func_forces_and_hessian(overrides):
    """``torch.func.grad`` and ``torch.func.hessian`` of an energy in the coordinates give
    autograd's forces and second derivatives (the memory-saving paths step aside under them)."""
    model = make_model(valid_radius=3.0, **overrides)
    feats, coors, mask = make_inputs(model, b=1, n=6, mask_fraction=0.0)

    def energy(x):
        return model(feats, x, mask).type0.sum()

    x = coors.clone().requires_grad_()
    (forces,) = torch.autograd.grad(energy(x), x, create_graph=True)
    assert (torch.func.grad(energy)(coors) - forces).abs().max() <= 1e-12 * forces.abs().max()
    rows = [torch.autograd.grad(f, x, retain_graph=True)[0].flatten() for f in forces.flatten()]
    hessian = torch.func.hessian(energy)(coors).reshape(18, 18)
    reference = torch.stack(rows)
    assert reference.abs().max() > 1e-3
    assert (hessian - reference).abs().max() <= 1e-10 * reference.abs().max()


def test_hessian_with_a_capped_adjacency():
    """``max_sparse_neighbors`` breaks ties between bonds at random, which vmap (inside
    ``torch.func.hessian``) refuses; under a transform the ties take a fixed order instead."""
    from equiformer import Equiformer

    torch.manual_seed(0)
    n = 8
    model = Equiformer(dim=8, num_degrees=2, heads=1, dim_head=4, depth=1, attend_sparse_neighbors=True,
                       num_neighbors=0, max_sparse_neighbors=1).double()
    feats, coors = torch.randn(1, n, 8, dtype=torch.float64), torch.randn(1, n, 3, dtype=torch.float64)
    i = torch.arange(n)
    chain = (i[:, None] - i[None]).abs() == 1  # inner nodes have 2 bonds, above the cap of 1

    def energy(x):
        return model(feats, x, adj_mat=chain).type0.pow(2).sum()

    first = torch.func.hessian(energy)(coors).reshape(3 * n, 3 * n)
    assert torch.isfinite(first).all() and first.abs().max() > 0
    assert (first - first.T).abs().max() <= 1e-10 * first.abs().max()
    assert torch.equal(torch.func.hessian(energy)(coors).reshape(3 * n, 3 * n), first)


@needs_transform_search
@pytest.mark.parametrize("tensor_product", ["so2", "cg"])
def test_hessian_twice_in_a_fresh_process(tensor_product):
    """Constants cached on first use (layouts, rotation gather indices, Clebsch-Gordan tensors)
    were wrapped tensors when that first use was inside ``torch.func.hessian``: the second call
    failed with an internal 'escaped' assert.  A fresh process, so no earlier test warms them."""
    import subprocess
    import sys

    code = f"""
import torch
from equiformer import Equiformer
torch.manual_seed(0)
model = Equiformer(dim=(8, 5), num_degrees=2, heads=1, dim_head=4, depth=1, tensor_product={tensor_product!r}).double()
feats, coors = torch.randn(1, 6, 8, dtype=torch.float64), torch.randn(1, 6, 3, dtype=torch.float64)
energy = lambda x: model(feats, x).type0.pow(2).sum()
first, second = torch.func.hessian(energy)(coors), torch.func.hessian(energy)(coors)
assert torch.equal(first, second) and first.abs().max() > 0
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.parametrize("version, release", [("2.4.1+cu121", (2, 4)), ("2.10.0a0+git1234", (2, 10)), ("2.13.0+cpu", (2, 13)), ("3.0", (3, 0))])
def test_torch_release_parses_version_strings(version, release):
    assert torch_release(version) == release


def test_old_torch_refuses_transforms_by_name(monkeypatch):
    """Before torch 2.10 functorch refused the distance search's data access with "Cannot access
    data pointer of Tensor that doesn't have storage" (measured on 2.4.1 to 2.9.1); the model now
    says what is needed instead, and plain autograd forces still work there."""
    monkeypatch.setattr(transforms, "torch_release", lambda version=None: (2, 4))
    model = make_model(valid_radius=3.0)
    feats, coors, mask = make_inputs(model, b=1, n=6, mask_fraction=0.0)

    def energy(x):
        return model(feats, x, mask).type0.sum()

    with pytest.raises(RuntimeError, match=r"torch\.func.*num_neighbors > 0.*torch >= 2\.10"):
        torch.func.grad(energy)(coors)
    x = coors.clone().requires_grad_()
    (forces,) = torch.autograd.grad(energy(x), x)
    assert forces.abs().max() > 0
