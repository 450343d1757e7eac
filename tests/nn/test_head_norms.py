"""squared_head_norms: values, gradients and second derivatives of its hand-written backward."""
import torch

from equiformer.nn.head_norms import squared_head_norms


def _inputs(seed=0, rows=7, width=9, heads=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, width, dtype=torch.float64, generator=g, requires_grad=True)
    head_sum = torch.zeros(heads, width, dtype=torch.float64)
    head_sum[torch.arange(width) % heads, torch.arange(width)] = 1.0
    return x, head_sum


def test_values_match_the_plain_formula():
    x, head_sum = _inputs()
    expected = torch.stack([(x[:, head_sum[h] > 0] ** 2).sum(1) for h in range(head_sum.shape[0])], 1)
    assert (squared_head_norms(x, head_sum) - expected).abs().max() <= 1e-12


def test_first_and_second_derivatives():
    x, head_sum = _inputs(1)
    f = lambda x: squared_head_norms(x, head_sum)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))
