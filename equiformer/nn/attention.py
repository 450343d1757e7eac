"""Equivariant graph attention (Equiformer): messages on edges, softmax over each node's neighbours.

Two ways to score a neighbour, sharing everything else:
  * ``MLPAttention`` (the Equiformer paper): invariant edge features -> LeakyReLU -> per-head
    logits; values pass a gate, so messages are non-linear in the neighbour's features.
  * ``L2DistanceAttention``: logit = -||q_i - k_ij|| per head over all its channels and
    components: an exact rotation invariant (the square root is smoothed by adding eps to the
    *squared* distance, never to the difference vector).

Each degree has its own heads (``heads[l]`` of width ``dim_head[l]``).  Attending to oneself
(``attend_self``) is a node-wise branch, not a zero-length edge.  All features are flat
(see ``fiber``); every per-head or per-channel broadcast is a precomputed index.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .activation import Gate
from .edge_chunks import over_receiver_chunks
from .edge_convolution import EdgeConvolution
from .edge_geometry import EdgeGeometry
from .edge_layout import EdgeLayout
from .exact_constants import ExactConstants
from .expand import ColumnExpansion
from .fiber import Fiber, gated_fiber, layout
from .head_norms import squared_head_norms
from .linear import EquivariantLinear, linear_many, stacking_order
from .linear_attention import GlobalLinearAttention
from .norm import EquivariantLayerNorm
from .scatter import segment_softmax


def _head_indices(heads: Fiber, dim_head: Fiber, single_headed: bool) -> tuple[Tensor, Tensor]:
    """For every flat position of the multi-head value fiber: its global head, and its source
    position in the (possibly single-headed) value fiber."""
    multi = tuple(h * d for h, d in zip(heads, dim_head))
    values = dim_head if single_headed else multi
    lay_v = layout(values)
    head_of, source = [], []
    first_head = 0
    for l, (h, d) in enumerate(zip(heads, dim_head)):
        for m in range(2 * l + 1):
            for c in range(h * d):
                head_of.append(first_head + c // d)
                source.append(lay_v.offsets[l] + m * values[l] + (c % d if single_headed else c))
        first_head += h
    return torch.tensor(head_of, device="cpu"), torch.tensor(source, device="cpu")


class _GraphAttention(ExactConstants):
    """Shared plumbing: prenorm, softmax over neighbours, aggregation, head gates, output."""

    uses_receiver_in_messages = True

    def __init__(
        self,
        fiber: Fiber,
        heads: Fiber,
        dim_head: Fiber,
        edge_attr_dim: int,
        attend_self: bool,
        single_headed_kv: bool,
        gate_attn_head_outputs: bool,
        num_linear_attn_heads: int,
        linear_attn_dim_head: int,
        edge_layout: EdgeLayout,
        init_out_zero: bool = True,
        smooth_norm: bool = False,
    ):
        super().__init__()
        self.fiber, self.heads, self.dim_head = tuple(fiber), tuple(heads), tuple(dim_head)
        self.attend_self, self.single_headed_kv = attend_self, single_headed_kv
        self.head_fiber = tuple(h * d for h, d in zip(heads, dim_head))
        self.value_fiber = self.dim_head if single_headed_kv else self.head_fiber
        self.edge_layout = edge_layout  # the model's tensor product: its convolutions and edge layout
        self.norm = EquivariantLayerNorm(fiber, smooth=smooth_norm)
        self.radial = nn.Linear(edge_attr_dim, sum(fiber))  # head on the shared radial trunk
        self.src_proj = EquivariantLinear(fiber, fiber)
        self.dst_proj = EquivariantLinear(fiber, fiber, bias=False) if self.uses_receiver_in_messages else None
        self.head_gates = nn.Linear(fiber[0], sum(heads)) if gate_attn_head_outputs else None
        self.linear_attn = (
            GlobalLinearAttention(fiber[0], num_linear_attn_heads, linear_attn_dim_head)
            if num_linear_attn_heads > 0
            else None
        )
        out_fiber = self.head_fiber
        if self.linear_attn is not None:
            out_fiber = (out_fiber[0] + self.linear_attn.dim_out, *out_fiber[1:])
        # zero: every block starts as the identity (its residual branch adds nothing)
        self.to_out = EquivariantLinear(out_fiber, fiber, bias=False, zero_init=init_out_zero)
        head_of, source = _head_indices(self.heads, self.dim_head, single_headed_kv)
        self.expand_heads = ColumnExpansion(head_of, sum(self.heads))  # (R, sum H) -> (R, F_heads)
        self.register_buffer("value_source", source, persistent=False)
        # the same maps for the edge-frame layouts, where values are weighted before they are
        # rotated back (the weights are invariant, so weighting commutes with the rotation)
        head_edge = edge_layout.positions(self.head_fiber)  # (F_heads,) degree-major position of each edge slot
        self.expand_heads_edge = ColumnExpansion(head_of[head_edge], sum(self.heads))
        value_slot = edge_layout.slots(self.value_fiber)  # (F_V,) edge slot of each degree-major position
        self.register_buffer("edge_value_source", value_slot[source[head_edge]], persistent=False)

    def node_linears(self) -> list[EquivariantLinear]:
        """The node-wise projections of the normalised input, computed together (one product
        per degree, see ``linear_many``) once per layer, not once per edge chunk: the message's
        ``W_s`` (and ``W_d``, unless the receiver enters through a query instead, see
        ``L2DistanceAttention``), then the subclass's own."""
        return [self.src_proj] if self.dst_proj is None else [self.src_proj, self.dst_proj]

    def _register_node_order(self) -> None:
        """Called by subclasses once their own node linears exist."""
        order = stacking_order([lin.fiber_out for lin in self.node_linears()])
        self.register_buffer("node_order", order, persistent=False)

    def node_inputs(self, projected: list[Tensor]) -> tuple[list[Tensor], Tensor | None, Tensor | None]:
        """The outputs of ``node_linears`` -> (the node tensors edge messages gather from, and
        the logits (N, sum H) and values (N, F_V) of every node attending to itself, or None)."""
        raise NotImplementedError

    def edge_input(self, nodes: list[Tensor], geometry: EdgeGeometry) -> Tensor:
        """Equiformer's message input ``W_s x_j + W_d x_i`` (only ``W_s x_j`` when the receiver
        enters through a query instead), rotated into the edge frame: (E, F)."""
        msg = nodes[0].index_select(0, geometry.src)
        if self.dst_proj is not None:
            msg = msg + nodes[1].index_select(0, geometry.dst)
        return geometry.rotate(msg, self.fiber)

    def edge_messages(self, nodes: list[Tensor], geometry: EdgeGeometry) -> tuple[Tensor, Tensor]:
        """-> (logits (E, sum H), values (E, F_V) in the edge frame)."""
        raise NotImplementedError

    def _attend(self, geometry: EdgeGeometry, *inputs: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The edge part over ``geometry``'s receivers: ``inputs`` are ``node_inputs``' node
        tensors, then the self logits (or None).  Returns (the weighted values summed per
        receiver, (N, F_heads); the weights of attending to oneself, (N, sum H) or None)."""
        *nodes, self_logits = inputs
        logits, values = self.edge_messages(nodes, geometry)
        alpha, alpha_self = segment_softmax(
            logits, geometry.dst, geometry.num_nodes, geometry.weight, self_logits, geometry.neighbors
        )
        weighted = self.weighted_values(values, alpha)  # (E, F_heads)
        return geometry.aggregate(weighted, self.head_fiber), alpha_self

    def weighted_values(self, values: Tensor, alpha: Tensor) -> Tensor:
        """``edge_messages``' values weighted by the attention ``alpha`` (E, sum H): (E, F_heads)
        in the edge frame."""
        return self._per_head(values, alpha, edge_frame=True)

    def _per_head(self, values: Tensor, alpha: Tensor, edge_frame: bool) -> Tensor:
        """values (R, F_V) weighted by alpha (R, sum H) -> (R, F_heads), in the edge-frame layout
        or the global one.

        alpha is expanded to every flat position first: a broadcast multiply per degree,
        ``(R, 2l+1, H, d) * (R, 1, H, 1)``, was measured slower forward+backward on CPU (its
        innermost broadcast dimension has size 1); the cost is one (R, F_heads) tensor kept for
        backward (bounded by ``edge_chunk_size`` when edges are chunked).
        """
        if self.single_headed_kv:
            values = values.index_select(1, self.edge_value_source if edge_frame else self.value_source)  # (R, F_heads)
        return values * (self.expand_heads_edge if edge_frame else self.expand_heads)(alpha)  # (R, F_heads)

    def forward(self, x: Tensor, geometry: EdgeGeometry) -> Tensor:
        x = self.norm(x)
        nodes, self_logits, self_values = self.node_inputs(linear_many(self.node_linears(), x, self.node_order))
        if not geometry.chunked:
            out, alpha_self = self._attend(geometry, *nodes, self_logits)
        else:
            # chunks of whole receivers, each recomputed in backward: a receiver's softmax and
            # sum are done within its chunk; the source-side tensor (first) is gathered from whole
            out, alpha_self = over_receiver_chunks(self._attend, geometry, tuple(nodes[:1]), (*nodes[1:], self_logits))
        if self_values is not None:
            out = out + self._per_head(self_values, alpha_self, edge_frame=False)
        scalars = x.split([self.fiber[0], x.shape[1] - self.fiber[0]], dim=1)[0] if len(self.fiber) > 1 else x
        if self.head_gates is not None:
            gates = torch.sigmoid(self.head_gates(scalars))  # (N, sum H)
            out = out * self.expand_heads(gates)
        if self.linear_attn is not None:
            extra = self.linear_attn(scalars, geometry.node_graph, geometry.num_graphs)
            c0 = self.head_fiber[0]
            head, tail = out.split([c0, out.shape[1] - c0], dim=1)
            out = torch.cat([head, extra, tail], dim=-1)
        return self.to_out(out)


class MLPAttention(_GraphAttention):
    """Equiformer's MLP attention with non-linear (gated) messages."""

    def __init__(self, *args, attn_hidden_dim_mult: int = 4, attn_leakyrelu_slope: float = 0.1, **kwargs):
        super().__init__(*args, **kwargs)
        self.attn_hidden = sum(h * attn_hidden_dim_mult for h in self.heads)
        gated = gated_fiber(self.value_fiber)
        self.mid_fiber = (self.attn_hidden + gated[0], *gated[1:])
        self.conv = EdgeConvolution(self.fiber, self.mid_fiber, self.edge_layout)
        self.to_logits = nn.Linear(self.attn_hidden, sum(self.heads), bias=False)
        self.leaky_slope = attn_leakyrelu_slope
        # the gate commutes with rotations: on edges it runs in the edge frame (and its layout)
        self.edge_gate = Gate(self.value_fiber, self.edge_layout)
        self.gate = Gate(self.value_fiber)
        if self.attend_self:
            self.self_in = EquivariantLinear(self.fiber, self.mid_fiber)
        self._register_node_order()
        # values with one head per channel group: the edge gate and the attention weights meet
        # on the small gate tensor, so the wide values are multiplied once (see weighted_values)
        self.fused_weighting = not self.single_headed_kv
        if self.fused_weighting:
            first = [sum(self.heads[:l]) for l in range(len(self.heads))]
            head_of = [first[l] + c // d for l, d in enumerate(self.dim_head) for c in range(self.value_fiber[l])]
            head_of = torch.tensor(head_of, device="cpu")  # (sum C,) head of every (degree, channel)
            self.register_buffer("scalar_head", head_of[: self.value_fiber[0]], persistent=False)  # (C_0,)
            self.register_buffer("gate_head", head_of[self.value_fiber[0] :], persistent=False)  # (G,)
        # order-major values: the convolution's per-order products are gated and weighted one
        # order at a time and concatenated once (no assembly of the convolution's output, no
        # gather of the gate factors: within each order they are a suffix, broadcast over +-m)
        self.by_order = self.fused_weighting and self.conv.block_widths is not None

    def _split(self, mid: Tensor, gate: Gate) -> tuple[Tensor, Tensor]:
        hidden, values = mid.split([self.attn_hidden, mid.shape[1] - self.attn_hidden], dim=1)
        return self.to_logits(F.leaky_relu(hidden, self.leaky_slope)), gate(values)

    def edge_messages(self, nodes, geometry):
        # one convolution makes both the attention hidden units and the values
        x, scale = self.edge_input(nodes, geometry), self.radial(geometry.edge_attr)
        if self.by_order:  # values as order blocks: [m = 0 | +-1 | +-2 ...]
            first, *higher = self.conv.output_blocks(x, geometry, scale)
            hidden, first = first.split([self.attn_hidden, first.shape[1] - self.attn_hidden], dim=1)
            return self.to_logits(F.leaky_relu(hidden.contiguous(), self.leaky_slope)), [first, *higher]
        mid = self.conv(x, geometry, scale)
        hidden, gated = mid.split([self.attn_hidden, mid.shape[1] - self.attn_hidden], dim=1)
        logits = self.to_logits(F.leaky_relu(hidden.contiguous(), self.leaky_slope))  # see Gate
        return logits, (gated if self.fused_weighting else self.edge_gate(gated))  # gated later if fused

    def weighted_values(self, values: Tensor, alpha: Tensor) -> Tensor:
        """``alpha * gate(values)`` as ``[silu(s) * alpha_s | x * (sigmoid(g) * alpha_g)]``: the
        per-head weights multiply the (E, C_0) scalars and the (E, G) gate factors, not the
        (E, F) values (two fewer passes over them, forward and backward)."""
        if not self.fused_weighting:
            return super().weighted_values(values, alpha)
        first, *higher = values if isinstance(values, list) else [values]
        c0, g = self.value_fiber[0], self.edge_gate.num_gates
        scalars, gates, rest = first.split([c0, g, first.shape[1] - c0 - g], dim=1)
        alpha = alpha.to(first.dtype)
        scalars = F.silu(scalars.contiguous()) * alpha.index_select(1, self.scalar_head)  # (E, C_0)
        factors = torch.sigmoid(gates.contiguous()) * alpha.index_select(1, self.gate_head)  # (E, G)
        if not higher:  # the whole edge layout in one tensor
            return torch.cat([scalars, rest * self.edge_gate.expand(factors)], dim=-1)  # (E, F_heads)
        # order blocks: m = 0 holds every (l >= 1, channel) once, in the gates' order; order m
        # holds degrees l >= m, the gates' suffix of width K_m, for +m and -m
        edges = first.shape[0]
        parts = [scalars, rest * factors]
        for block in higher:
            k = block.shape[1] // 2
            parts.append((block.view(edges, 2, k) * factors[:, g - k :].unsqueeze(1)).view(edges, 2 * k))
        return torch.cat(parts, dim=-1)  # (E, F_heads), order-major

    def node_linears(self) -> list[EquivariantLinear]:
        return super().node_linears() + ([self.self_in] if self.attend_self else [])

    def node_inputs(self, projected):
        if not self.attend_self:
            return projected, None, None
        return projected[:-1], *self._split(projected[-1], self.gate)


class L2DistanceAttention(_GraphAttention):
    """logit = -scale_l * sqrt(||q_i - k_ij||^2 + eps) per head, over all its channels and components.

    Keys and values depend on the neighbour and the edge; the receiver enters through its query.
    """

    uses_receiver_in_messages = False

    def __init__(self, *args, eps: float = 1e-8, **kwargs):
        super().__init__(*args, **kwargs)
        self.eps = eps
        self.to_q = EquivariantLinear(self.fiber, self.head_fiber)
        self.conv_k = EdgeConvolution(self.fiber, self.value_fiber, self.edge_layout)
        self.conv_v = EdgeConvolution(self.fiber, self.value_fiber, self.edge_layout)
        if self.attend_self:
            self.self_k = EquivariantLinear(self.fiber, self.value_fiber)
            self.self_v = EquivariantLinear(self.fiber, self.value_fiber)
        self._register_node_order()
        # sums squared differences per head (a 0/1 matrix), with 1/sqrt(dim_head) temperatures;
        # a copy of each map for the edge-frame layouts, where keys and rotated queries meet
        scale = torch.tensor([d**-0.5 for h, d in zip(self.heads, self.dim_head) for _ in range(h)], dtype=torch.float64, device="cpu")
        # stored (heads, F) and padded to a multiple of 16 heads: CPU BLAS is 2-3x slower on
        # skinny products with an odd number of columns (measured for (E, F) @ (F, 10))
        padded_heads = -(-len(scale) // 16) * 16
        head_sum = self.expand_heads.membership(padded_heads)  # (H_pad, F_heads)
        dtype = torch.get_default_dtype()
        self.register_constant("head_scale", scale)
        self.register_buffer("head_sum", head_sum.to(dtype), persistent=False)
        self.register_buffer("edge_head_sum", head_sum[:, self.edge_layout.positions(self.head_fiber)].to(dtype), persistent=False)

    def _keys_per_head(self, k: Tensor, edge_frame: bool) -> Tensor:
        """Keys (R, F_V) at every position of the head fiber (R, F_heads)."""
        if self.single_headed_kv:
            k = k.index_select(1, self.edge_value_source if edge_frame else self.value_source)
        return k

    def _logits(self, difference: Tensor, edge_frame: bool) -> Tensor:
        """From ``k - q`` (R, F_heads), formed as ``k + (-q)``: its backward hands both inputs the
        same gradient tensor, where ``q - k`` would negate it per edge."""
        head_sum = (self.edge_head_sum if edge_frame else self.head_sum).to(difference.dtype)  # (H_pad, F_heads)
        sq = squared_head_norms(difference, head_sum)[:, : self.head_scale.numel()]  # (R, sum H)
        return -self.head_scale.to(difference.dtype) * torch.sqrt(sq + self.eps)

    def node_linears(self) -> list[EquivariantLinear]:
        return [self.src_proj, self.to_q] + ([self.self_k, self.self_v] if self.attend_self else [])

    def node_inputs(self, projected):
        src, neg_q = projected[0], -projected[1]  # W_s x (N, F), -q (N, F_heads)
        if not self.attend_self:
            return [src, neg_q], None, None
        difference = self._keys_per_head(projected[2], edge_frame=False) + neg_q
        return [src, neg_q], self._logits(difference, edge_frame=False), projected[3]

    def edge_messages(self, nodes, geometry):
        x_edge = self.edge_input(nodes, geometry)
        k, v = EdgeConvolution.apply_all([self.conv_k, self.conv_v], x_edge, geometry, self.radial(geometry.edge_attr))
        # compare in the edge frame (distances are invariant); only values go back
        keys = self._keys_per_head(k, edge_frame=True)
        difference = geometry.rotate_receivers(nodes[-1], self.head_fiber, plus=keys)  # (E, F_heads)
        return self._logits(difference, edge_frame=True), v
