"""Per-head squared norms, with a backward of two (R, F) passes instead of four."""
from __future__ import annotations

import torch
from torch import Tensor


class _SquaredHeadNorms(torch.autograd.Function):
    """``(x * x) @ head_sum.T``, backward ``((2 grad) @ head_sum) * x``.  Plain autograd of
    ``x * x`` multiplies the gradient by ``x`` twice and adds the two products."""

    # forward and setup_context apart, with a vmap rule generated from the ops: usable under
    # torch.func transforms (grad, jacrev, vmap), not only plain autograd
    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, head_sum: Tensor) -> Tensor:
        return (x * x) @ head_sum.T  # (R, H)

    @staticmethod
    def setup_context(ctx, inputs: tuple[Tensor, Tensor], output: Tensor) -> None:
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)

    @staticmethod
    def jvp(ctx, x_tangent: Tensor, head_sum_tangent: Tensor | None) -> Tensor:
        """Forward mode (``torch.func.hessian``, ``jvp``); ``head_sum`` is a constant."""
        x, head_sum = ctx.saved_tensors
        return (2 * x * x_tangent) @ head_sum.T  # (R, H)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, head_sum = ctx.saved_tensors
        # plain differentiable ops on saved inputs: double backward (forces in a loss) works
        return ((2 * grad) @ head_sum) * x, None  # (R, F)


def squared_head_norms(x: Tensor, head_sum: Tensor) -> Tensor:
    """``x``: ``(R, F)``; ``head_sum``: ``(H, F)`` 0/1 (position f belongs to head h).
    Returns ``(R, H)``: for every row and head, the squared norm of ``x`` over its positions."""
    return _SquaredHeadNorms.apply(x, head_sum)


__all__ = ["squared_head_norms"]
