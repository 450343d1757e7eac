import pytest
import torch
from e3nn import o3

from equiformer.so3 import block_diagonal, degree_slice, edge_to_axis_rotation, spherical_harmonics, wigner_D, wigner_D_block_diagonal
from equiformer.testing import random_rotation

LMAX = 10


def _rotations(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([random_rotation(torch.float64, generator=g) for _ in range(n)])


def test_matches_e3nn_up_to_degree_10(float64_default):  # e3nn builds its generators in the default dtype
    g = torch.Generator().manual_seed(0)
    alpha, beta, gamma = (torch.rand(200, dtype=torch.float64, generator=g) * 6.28 for _ in range(3))
    r = o3.angles_to_matrix(alpha, beta, gamma)
    ours = wigner_D(LMAX, r)
    for l in range(LMAX + 1):
        ref = o3.wigner_D(l, alpha, beta, gamma)
        assert (ours[l] - ref).abs().max() <= 1e-10, l


def test_degree_one_is_the_rotation_itself():
    r = _rotations(50)
    assert torch.equal(wigner_D(1, r)[1], r)


def test_homomorphism_and_orthogonality():
    r1, r2 = _rotations(30, 1), _rotations(30, 2)
    d1, d2, d12 = wigner_D(LMAX, r1), wigner_D(LMAX, r2), wigner_D(LMAX, r1 @ r2)
    for l in range(LMAX + 1):
        assert (d12[l] - d1[l] @ d2[l]).abs().max() <= 1e-12
        eye = torch.eye(2 * l + 1, dtype=torch.float64)
        assert (d1[l] @ d1[l].transpose(-1, -2) - eye).abs().max() <= 1e-12


@pytest.mark.parametrize("improper", [False, True])
def test_harmonics_rotate_with_wigner(improper):
    r = _rotations(40, 3)
    if improper:
        r = -r  # O(3): parity (-1)^l
    x = torch.randn(40, 3, dtype=torch.float64)
    y, y_rot = spherical_harmonics(LMAX, x), spherical_harmonics(LMAX, torch.einsum("bij,bj->bi", r, x))
    d = wigner_D(LMAX, r)
    for l in range(LMAX + 1):
        s = degree_slice(l)
        assert (y_rot[:, s] - torch.einsum("bij,bj->bi", d[l], y[:, s])).abs().max() <= 1e-12


def test_block_diagonal_holds_every_degree():
    r = _rotations(5)
    full = wigner_D_block_diagonal(3, r)
    assert full.shape == (5, 16, 16)
    blocks = wigner_D(3, r)
    for l in range(4):
        s = degree_slice(l)
        assert torch.equal(full[:, s, s], blocks[l])
    off = full.clone()
    for l in range(4):
        off[:, degree_slice(l), degree_slice(l)] = 0
    assert off.abs().max() == 0
    assert torch.equal(block_diagonal(blocks), full)


def test_differentiable_in_the_rotation():
    r = _rotations(2).requires_grad_()
    assert torch.autograd.gradcheck(lambda m: wigner_D(4, m)[4], (r,))


def test_batch_shape_and_dtype_follow_input():
    r = _rotations(6).reshape(2, 3, 3, 3).float()
    d = wigner_D(2, r)
    assert d[2].shape == (2, 3, 5, 5) and d[2].dtype == torch.float32


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match="rotation"):
        wigner_D(2, torch.randn(4, 3))


def test_edge_chunks_give_the_unchunked_blocks():
    """More rotations than one CPU chunk: the chunked blocks equal one pass over all of them,
    batch shape and gradients included."""
    from equiformer.so3.wigner import _EDGE_CHUNK, _wigner_chunk

    g = torch.Generator().manual_seed(3)
    count = 2 * _EDGE_CHUNK + 7
    r = edge_to_axis_rotation(torch.randn(count, 3, dtype=torch.float64, generator=g)).requires_grad_()
    chunked = wigner_D(4, r.view(1, count, 3, 3))
    whole = _wigner_chunk(4, r)
    for l, (a, b) in enumerate(zip(chunked, whole)):
        assert a.shape == (1, count, 2 * l + 1, 2 * l + 1)
        assert (a[0] - b).abs().max() <= 1e-12
    weights = [torch.randn(b.shape, dtype=torch.float64, generator=g) for b in whole]
    (grad_chunked,) = torch.autograd.grad(sum((a[0] * w).sum() for a, w in zip(chunked, weights)), r)
    (grad_whole,) = torch.autograd.grad(sum((b * w).sum() for b, w in zip(whole, weights)), r)
    assert (grad_chunked - grad_whole).abs().max() <= 1e-12


def test_permuted_block_diagonal_is_one_gather_of_the_permuted_rows():
    from equiformer.so3 import permuted_block_diagonal

    blocks = wigner_D(3, _rotations(4, seed=5))
    blocks = [torch.ones(4, 1, 1, dtype=torch.float64)] * 2 + blocks[1:]  # identity rows, as rotations use
    order = torch.randperm(17, generator=torch.Generator().manual_seed(1))
    assert torch.equal(permuted_block_diagonal(blocks, order), block_diagonal(blocks)[:, order])
