"""Equivariant graph attention (Equiformer): messages on edges, softmax over each node's neighbours.

Two ways to score a neighbour, sharing everything else:
  * ``MLPAttention`` (the Equiformer paper): invariant edge features -> LeakyReLU -> per-head
    logits; values pass a gate and a second edge convolution ("non-linear messages").
  * ``L2DistanceAttention``: logit = -||q_i - k_ij|| per head over all components, an exact
    rotation invariant (the square root is smoothed by adding eps to the *squared* distance).

Each degree has its own heads (``heads[l]``, ``dim_head[l]``).  Attending to oneself
(``attend_self``) is a separate node-wise branch, not a zero-length edge.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .activation import Gate, gated_fiber
from .edge_convolution import EdgeConvolution
from .edge_geometry import EdgeGeometry
from .fiber import Features, Fiber, gather_nodes
from .linear import EquivariantLinear
from .linear_attention import GlobalLinearAttention
from .norm import EquivariantLayerNorm
from .radial import RadialMLP
from .scatter import segment_softmax


class _GraphAttention(nn.Module):
    """Shared plumbing: prenorm, softmax over neighbours, aggregation, head gates, output."""

    def __init__(
        self,
        fiber: Fiber,
        heads: Fiber,
        dim_head: Fiber,
        edge_attr_dim: int,
        radial_hidden_dim: int,
        attend_self: bool,
        single_headed_kv: bool,
        gate_attn_head_outputs: bool,
        num_linear_attn_heads: int,
        linear_attn_dim_head: int,
        tensor_product: str,
        reflection: bool,
    ):
        super().__init__()
        self.fiber, self.heads, self.dim_head = tuple(fiber), tuple(heads), tuple(dim_head)
        self.attend_self, self.single_headed_kv = attend_self, single_headed_kv
        self.value_fiber = self.dim_head if single_headed_kv else tuple(h * d for h, d in zip(heads, dim_head))
        self.conv_kwargs = dict(tensor_product=tensor_product, reflection=reflection)
        self.radial_args = (edge_attr_dim, radial_hidden_dim)
        self.norm = EquivariantLayerNorm(fiber)
        self.src_proj = EquivariantLinear(fiber, fiber)
        self.dst_proj = EquivariantLinear(fiber, fiber, bias=False)
        self.head_gates = nn.Linear(fiber[0], sum(heads)) if gate_attn_head_outputs else None
        self.linear_attn = (
            GlobalLinearAttention(fiber[0], num_linear_attn_heads, linear_attn_dim_head)
            if num_linear_attn_heads > 0
            else None
        )
        out_in = tuple(h * d for h, d in zip(heads, dim_head))
        if self.linear_attn is not None:
            out_in = (out_in[0] + self.linear_attn.dim_out, *out_in[1:])
        self.to_out = EquivariantLinear(out_in, fiber, bias=False, zero_init=True)

    def edge_input(self, x: Features, geometry: EdgeGeometry) -> Features:
        """Equiformer's message input ``W_s x_j + W_d x_i``, rotated into the edge frame."""
        src = gather_nodes(self.src_proj(x), geometry.src)
        dst = gather_nodes(self.dst_proj(x), geometry.dst)
        return geometry.to_edge_frame([s + d for s, d in zip(src, dst)])

    def messages(self, x: Features, geometry: EdgeGeometry):
        """-> (edge logits (E, sum H), edge values, self logits (N, sum H) or None, self values)."""
        raise NotImplementedError

    def forward(self, x: Features, geometry: EdgeGeometry) -> Features:
        x = self.norm(x)
        logits, values, self_logits, self_values = self.messages(x, geometry)
        alpha, alpha_self = segment_softmax(logits, geometry.dst, geometry.num_nodes, geometry.weight, self_logits)
        alphas = alpha.split(self.heads, dim=-1)
        alphas_self = alpha_self.split(self.heads, dim=-1) if alpha_self is not None else [None] * len(self.heads)
        gates = torch.sigmoid(self.head_gates(x[0][:, 0])).split(self.heads, -1) if self.head_gates is not None else None
        out = []
        for l, (v, a, v_self, a_self) in enumerate(zip(values, alphas, self_values or [None] * len(values), alphas_self)):
            h = self.heads[l]
            weighted = self._weigh(v, a, h)  # (E, 2l+1, H*D)
            total = weighted.new_zeros(geometry.num_nodes, *weighted.shape[1:]).index_add(0, geometry.dst, weighted)
            if v_self is not None:
                total = total + self._weigh(v_self, a_self, h)
            if gates is not None:
                total = self._weigh_heads(total, gates[l], h)
            out.append(total)
        if self.linear_attn is not None:
            extra = self.linear_attn(x[0][:, 0], geometry.node_graph, geometry.num_graphs)
            out[0] = torch.cat([out[0], extra[:, None, :]], dim=-1)
        return self.to_out(out)

    def _weigh(self, values: Tensor, alpha: Tensor, heads: int) -> Tensor:
        """``values`` (R, 2l+1, H*D) or single-headed (R, 2l+1, D), ``alpha`` (R, H) -> (R, 2l+1, H*D)."""
        if self.single_headed_kv:
            return (alpha[:, None, :, None] * values[:, :, None, :]).flatten(-2)
        return self._weigh_heads(values, alpha, heads)

    @staticmethod
    def _weigh_heads(values: Tensor, weights: Tensor, heads: int) -> Tensor:
        r, m, c = values.shape
        return (values.view(r, m, heads, c // heads) * weights[:, None, :, None]).view(r, m, c)


class MLPAttention(_GraphAttention):
    """Equiformer's MLP attention with non-linear messages."""

    def __init__(self, *args, attn_hidden_dim_mult: int = 4, attn_leakyrelu_slope: float = 0.1, **kwargs):
        super().__init__(*args, **kwargs)
        self.attn_hidden = sum(h * attn_hidden_dim_mult for h in self.heads)
        gated = gated_fiber(self.value_fiber)
        self.mid_fiber = (self.attn_hidden + gated[0], *gated[1:])
        self.radial = RadialMLP(*self.radial_args, sum(self.fiber))
        self.conv_in = EdgeConvolution(self.fiber, self.mid_fiber, **self.conv_kwargs)
        self.conv_value = EdgeConvolution(self.value_fiber, self.value_fiber, **self.conv_kwargs)
        self.to_logits = nn.Linear(self.attn_hidden, sum(self.heads), bias=False)
        self.leaky_slope = attn_leakyrelu_slope
        self.gate = Gate(self.value_fiber)
        if self.attend_self:
            self.self_in = EquivariantLinear(self.fiber, self.mid_fiber)
            self.self_value = EquivariantLinear(self.value_fiber, self.value_fiber, bias=False)

    def _split(self, mid: Features) -> tuple[Tensor, Features]:
        scalars = mid[0][:, 0]
        logits = self.to_logits(F.leaky_relu(scalars[:, : self.attn_hidden], self.leaky_slope))
        values = self.gate([mid[0][..., self.attn_hidden :], *mid[1:]])
        return logits, values

    def messages(self, x: Features, geometry: EdgeGeometry):
        mid = self.conv_in(self.edge_input(x, geometry), geometry, self.radial(geometry.edge_attr))
        logits, values = self._split(mid)
        values = geometry.from_edge_frame(self.conv_value(values, geometry))
        if not self.attend_self:
            return logits, values, None, None
        self_logits, self_values = self._split(self.self_in(x))
        return logits, values, self_logits, self.self_value(self_values)


class L2DistanceAttention(_GraphAttention):
    """logit = -scale * sqrt(||q_i - k_ij||^2 + eps) per head, over all its channels and components."""

    def __init__(self, *args, eps: float = 1e-8, **kwargs):
        super().__init__(*args, **kwargs)
        self.eps = eps
        self.kv_fiber = tuple(2 * v for v in self.value_fiber)
        self.query_fiber = tuple(h * d for h, d in zip(self.heads, self.dim_head))
        self.radial = RadialMLP(*self.radial_args, sum(self.fiber))
        self.to_q = EquivariantLinear(self.fiber, self.query_fiber)
        self.conv_kv = EdgeConvolution(self.fiber, self.kv_fiber, **self.conv_kwargs)
        self.scales = [d**-0.5 for d in self.dim_head]
        if self.attend_self:
            self.self_kv = EquivariantLinear(self.fiber, self.kv_fiber)

    def _logits(self, q: Features, kv: Features) -> tuple[Tensor, Features]:
        logits, values = [], []
        for l, (ql, kvl) in enumerate(zip(q, kv)):
            k, v = kvl.chunk(2, dim=-1)
            h, d = self.heads[l], self.dim_head[l]
            qh = ql.view(ql.shape[0], ql.shape[1], h, d)
            kh = k[:, :, None, :] if self.single_headed_kv else k.view(k.shape[0], k.shape[1], h, d)
            sq = (qh - kh).pow(2).sum(dim=(1, 3))  # (R, H)
            logits.append(-self.scales[l] * torch.sqrt(sq + self.eps))
            values.append(v)
        return torch.cat(logits, dim=-1), values

    def messages(self, x: Features, geometry: EdgeGeometry):
        q = self.to_q(x)
        kv = self.conv_kv(self.edge_input(x, geometry), geometry, self.radial(geometry.edge_attr))
        kv = geometry.from_edge_frame(kv)
        logits, values = self._logits(gather_nodes(q, geometry.dst), kv)
        if not self.attend_self:
            return logits, values, None, None
        self_logits, self_values = self._logits(q, self.self_kv(x))
        return logits, values, self_logits, self_values
