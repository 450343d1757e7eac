import torch

from equiformer.so3 import EDGE_AXIS, edge_to_axis_rotation


def _hard_directions():
    eps = 1e-9
    poles = [[0, 1, 0], [0, -1, 0]]
    near = [[eps, 1, 0], [0, 1, eps], [-eps, 1, eps], [eps, -1, 0], [0, -1, -eps], [eps, -1, eps], [eps, 1e-17, 0]]
    equator = [[1, 0, 0], [0, 0, 1], [1, 0, 1], [-1, 1e-300, 0]]
    return torch.tensor(poles + near + equator, dtype=torch.float64)


def test_maps_directions_onto_the_axis():
    g = torch.Generator().manual_seed(0)
    v = torch.cat([torch.randn(100_000, 3, dtype=torch.float64, generator=g), _hard_directions()])
    r = edge_to_axis_rotation(v)
    u = v / v.norm(dim=-1, keepdim=True)
    axis = torch.tensor(EDGE_AXIS, dtype=torch.float64)
    assert (torch.einsum("bij,bj->bi", r, u) - axis).abs().max() <= 1e-12
    eye = torch.eye(3, dtype=torch.float64)
    assert (r @ r.transpose(-1, -2) - eye).abs().max() <= 1e-12
    assert (torch.linalg.det(r) - 1).abs().max() <= 1e-12


def test_gradient_is_finite_at_and_near_the_poles():
    v = _hard_directions().requires_grad_()
    r = edge_to_axis_rotation(v)
    (r * torch.randn(3, 3, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(v.grad).all()


def test_zero_vector_gives_identity_and_is_deterministic():
    v = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]], dtype=torch.float64)
    r1, r2 = edge_to_axis_rotation(v), edge_to_axis_rotation(v.clone())
    assert torch.equal(r1, r2)
    assert torch.equal(r1[0], torch.eye(3, dtype=torch.float64))


def test_float32_accuracy():
    v = torch.randn(10_000, 3)
    r = edge_to_axis_rotation(v)
    y = torch.einsum("bij,bj->bi", r, v / v.norm(dim=-1, keepdim=True))
    assert (y - torch.tensor(EDGE_AXIS)).abs().max() <= 1e-6
