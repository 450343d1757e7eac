"""Broadcast per-group factors (heads, gates) to every flat position of their group."""
from __future__ import annotations

import torch
from torch import Tensor, nn

# measured on CPU, forward+backward of ``values * expand(factors)``: a product with a 0/1 matrix
# beats a column gather (whose backward is a scatter) by 1.1-1.5x up to ~32 groups, and loses
# 1.7x at 96 (its multiply-adds grow with the number of groups)
_MAX_GROUPS_FOR_PRODUCT = 32


class ColumnExpansion(nn.Module):
    """``(R, G) -> (R, F)``: column ``f`` of the output is column ``group_of[f]`` of the input."""

    def __init__(self, group_of: Tensor, num_groups: int):
        super().__init__()
        self.by_product = num_groups <= _MAX_GROUPS_FOR_PRODUCT
        self.register_buffer("group_of", group_of.clone(), persistent=False)
        if self.by_product:
            self.register_buffer("matrix", self.membership(num_groups), persistent=False)

    def membership(self, rows: int) -> Tensor:
        """``(rows, F)`` 0/1 matrix, 1 where position f belongs to group g (``rows >= G``: the
        extra rows are zero padding)."""
        device = self.group_of.device
        matrix = torch.zeros(rows, len(self.group_of), device=device)
        matrix[self.group_of, torch.arange(len(self.group_of), device=device)] = 1.0
        return matrix.to(torch.get_default_dtype())

    def forward(self, factors: Tensor) -> Tensor:
        # under torch.compile always the gather: inductor (torch 2.13, CPU, dynamic shapes)
        # miscompiled the product form inside the attention layer (wrong outputs, checked by
        # benchmarks/compile_gain.py); eager runs take the faster product
        if self.by_product and not torch.compiler.is_compiling():
            return factors @ self.matrix.to(factors.dtype)
        return factors.index_select(1, self.group_of)
