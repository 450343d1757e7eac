"""First layer: input degrees -> hidden fiber.  This is where geometry first enters the features
(a scalar-only input gains l > 0 features through the neighbours' edge directions)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .edge_chunks import over_receiver_chunks
from .edge_convolution import EdgeConvolution
from .edge_geometry import EdgeGeometry
from .edge_layout import EdgeLayout
from .fiber import Fiber
from .linear import EquivariantLinear
from .scatter import segment_sum


class InputEmbedding(nn.Module):
    """``x -> W x + sum_j w_ij conv(x_j) / (1 + sum_j w_ij)``: self-interaction for the degrees the
    input has, plus an edge convolution to every hidden degree, averaged with the smooth cutoff
    weights (the +1 keeps the average continuous as neighbours enter and leave).  ``edge_layout``:
    the model's tensor product, which the geometry's frames were built for."""

    def __init__(self, fiber_in: Fiber, fiber: Fiber, edge_attr_dim: int, edge_layout: EdgeLayout):
        super().__init__()
        self.fiber_in, self.fiber = tuple(fiber_in), tuple(fiber)
        self.self_in = EquivariantLinear(self.fiber_in, self.fiber[: len(self.fiber_in)])
        self.radial = nn.Linear(edge_attr_dim, sum(fiber_in))  # head on the shared radial trunk
        self.edge_layout = edge_layout
        self.conv = EdgeConvolution(fiber_in, fiber, edge_layout)

    def _summed_messages(self, geometry: EdgeGeometry, x: Tensor) -> tuple[Tensor]:
        """``sum_j w_ij conv(x_j)`` per receiver: ((N, F),)."""
        weight = geometry.weight  # (E,) smooth cutoff, folded into the per-input radial factors
        messages = geometry.rotate(x.index_select(0, geometry.src), self.fiber_in)  # (E, F_in), edge layout
        messages = self.conv(messages, geometry, self.radial(geometry.edge_attr) * weight[:, None])  # (E, F)
        messages = geometry.rotate(messages, self.fiber, inverse=True)  # (E, F)
        return (segment_sum(messages, geometry.dst, geometry.num_nodes),)

    def forward(self, x: Tensor, geometry: EdgeGeometry) -> Tensor:
        """``(N, F_in) -> (N, F)``."""
        if geometry.chunked:  # recomputed chunk by chunk in backward (bounded memory)
            (out,) = over_receiver_chunks(self._summed_messages, geometry, (x,))
        else:
            (out,) = self._summed_messages(geometry, x)
        norm = 1.0 + segment_sum(geometry.weight, geometry.dst, geometry.num_nodes)  # (N,)
        out = out / norm[:, None]
        own = self.self_in(x)  # (N, F over the input's degrees)
        if own.shape[1] == out.shape[1]:
            return out + own
        head, tail = out.split([own.shape[1], out.shape[1] - own.shape[1]], dim=1)
        return torch.cat([head + own, tail], dim=-1)
