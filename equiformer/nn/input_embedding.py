"""First layer: input degrees -> hidden fiber.  This is where geometry first enters the features
(a scalar-only input gains l > 0 features through the neighbours' edge directions)."""
from __future__ import annotations

import math

import torch
from torch import nn

from .edge_convolution import EdgeConvolution
from .edge_geometry import EdgeGeometry
from .fiber import Features, Fiber, gather_nodes
from .radial import RadialMLP


class InputEmbedding(nn.Module):
    """``x -> W x + sum_j w_ij conv(x_j) / (1 + sum_j w_ij)``: self-interaction for the degrees the
    input has, plus an edge convolution to every hidden degree, averaged with the smooth cutoff
    weights (the +1 keeps the average continuous as neighbours enter and leave)."""

    def __init__(
        self,
        fiber_in: Fiber,
        fiber: Fiber,
        edge_attr_dim: int,
        radial_hidden_dim: int,
        tensor_product: str = "so2",
        reflection: bool = False,
    ):
        super().__init__()
        self.fiber_in, self.fiber = tuple(fiber_in), tuple(fiber)
        self.self_weights = nn.ParameterList(
            nn.Parameter(torch.randn(ci, co) / math.sqrt(ci)) for ci, co in zip(fiber_in, fiber)
        )
        self.bias = nn.Parameter(torch.zeros(fiber[0]))
        self.radial = RadialMLP(edge_attr_dim, radial_hidden_dim, sum(fiber_in))
        self.conv = EdgeConvolution(fiber_in, fiber, tensor_product, reflection)

    def forward(self, x: Features, geometry: EdgeGeometry) -> Features:
        messages = self.conv(geometry.to_edge_frame(gather_nodes(x, geometry.src)), geometry, self.radial(geometry.edge_attr))
        messages = geometry.from_edge_frame(messages)
        weight = geometry.weight  # (E,)
        norm = 1.0 + weight.new_zeros(geometry.num_nodes).index_add(0, geometry.dst, weight)  # (N,)
        out = []
        for l, m in enumerate(messages):
            total = m.new_zeros(geometry.num_nodes, *m.shape[1:]).index_add(0, geometry.dst, m * weight[:, None, None])
            total = total / norm[:, None, None]
            if l < len(self.self_weights):
                total = total + x[l] @ self.self_weights[l]
            out.append(total)
        out[0] = out[0] + self.bias
        return out
