"""Degree-wise channel mixing: the only linear maps that commute with rotations and need no edge."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .fiber import Fiber, layout, parameters_of


def _degreewise(x: Tensor, fiber_in: Fiber, weights: list[Tensor], bias: Tensor | None) -> Tensor:
    """``(N, F_in) -> (N, F_out)``: ``y_l = x_l @ W_l`` (``W_l``: ``(C_in_l, C_out_l)``), plus
    ``bias`` on degree 0."""
    n = x.shape[0]
    degrees = layout(fiber_in).split(x)
    scalars = degrees[0][:, 0]
    parts = [torch.addmm(bias, scalars, weights[0]) if bias is not None else scalars @ weights[0]]
    for xl, w in zip(degrees[1:], weights[1:]):
        # one (N (2l+1), C_in) GEMM: under no_grad (the reversible forward, inference) ``xl @ w``
        # on this strided view runs as a batched product with an expanded weight; the whole
        # forward gained 1-3 % from this (ab_compare --mode fwd)
        rows = xl.shape[1]
        parts.append((xl.reshape(n * rows, xl.shape[2]) @ w).view(n, rows * w.shape[1]))  # (N, (2l+1) C_out)
    return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]


class EquivariantLinear(nn.Module):
    """``y_l = x_l @ W_l`` on flat features (plus a bias on degree 0, the one place a bias is
    equivariant).  Both fibers must have the same degrees."""

    def __init__(self, fiber_in: Fiber, fiber_out: Fiber, bias: bool = True, zero_init: bool = False):
        super().__init__()
        if len(fiber_in) != len(fiber_out):
            raise ValueError(f"fibers must have the same degrees, got {fiber_in} -> {fiber_out}")
        self.fiber_in, self.fiber_out = tuple(fiber_in), tuple(fiber_out)
        device = torch.get_default_device()  # parameters: where nn.Linear would put them
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(ci, co, device=device) / math.sqrt(ci)) for ci, co in zip(fiber_in, fiber_out)
        )
        self.bias = nn.Parameter(torch.zeros(fiber_out[0], device=device)) if bias else None
        if zero_init:
            for w in self.weights:
                nn.init.zeros_(w)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, F_in) -> (N, F_out)``."""
        return _degreewise(x, self.fiber_in, parameters_of(self.weights), self.bias)


def stacking_order(fibers_out: list[Fiber]) -> Tensor:
    """For ``linear_many``: the columns of the stacked output (degree-major over the summed
    fiber) in the order of the separate outputs' flat layouts, one after another."""
    stacked = tuple(sum(cs) for cs in zip(*fibers_out))
    offsets = layout(stacked).offsets
    order = []
    for k, fiber in enumerate(fibers_out):
        for l, c in enumerate(fiber):
            start = sum(f[l] for f in fibers_out[:k])  # this output's channels within degree l
            for m in range(2 * l + 1):
                base = offsets[l] + m * stacked[l] + start
                order.extend(range(base, base + c))
    return torch.tensor(order, device="cpu")  # callers move it once to where it is used


def linear_many(linears: list[EquivariantLinear], x: Tensor, order: Tensor | None = None) -> list[Tensor]:
    """``[lin(x) for lin in linears]`` for linears of the same input fiber, as one product per
    degree: a few dozen small ops instead of that many per linear (the per-op overhead dominates
    node-wise layers on small graphs).  The outputs are column views of one tensor.

    ``order``: ``stacking_order`` of the linears' output fibers, made once by the caller (a
    buffer); computed here if not given."""
    if len(linears) == 1:
        return [linears[0](x)]
    fiber_in = linears[0].fiber_in
    if any(lin.fiber_in != fiber_in for lin in linears):
        raise ValueError(f"linears must share their input fiber, got {[lin.fiber_in for lin in linears]}")
    per_linear = [parameters_of(lin.weights) for lin in linears]
    weights = [torch.cat(ws, dim=1) for ws in zip(*per_linear)]  # per degree (C_in, sum C_out)
    bias = None
    if any(lin.bias is not None for lin in linears):
        bias = torch.cat([lin.bias if lin.bias is not None else x.new_zeros(lin.fiber_out[0]) for lin in linears])
    if order is None:
        order = stacking_order([lin.fiber_out for lin in linears]).to(x.device)
    sizes = [layout(lin.fiber_out).size for lin in linears]
    stacked = _degreewise(x, fiber_in, weights, bias)  # (N, sum F_out) degree-major
    return list(stacked.index_select(1, order).split(sizes, dim=1))


__all__ = ["EquivariantLinear", "linear_many", "stacking_order"]
