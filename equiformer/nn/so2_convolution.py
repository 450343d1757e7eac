"""SO(2) edge convolution: the fast path of the equivariant tensor product (eSCN, EquiformerV2).

In an edge's own frame (edge along the polar axis) a rotation-equivariant linear map of
harmonic features may only mix components of equal order ``|m|``, and between the ``+m`` and
``-m`` components only as a complex multiplication.  So the whole tensor product with the edge's
harmonics reduces to one matrix product per order ``m``: O(L^3) instead of O(L^6) per edge, and
the weights are shared by all edges (the radial network only rescales input features).

Two equivalent executions of the same weights:
  * ``per order``: gather the order-m components, one GEMM per m, scatter back (O(L^3)).
  * ``dense``: the per-order weights scattered into one block-sparse ``F_in x F_out`` matrix,
    applied with a single GEMM.  More flops (O(L^4)) but far fewer kernel launches and no
    gathers, which wins for the small fibers typical of molecules and proteins.
The cheaper one is picked at construction from the flop counts.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .edge_layout import EdgeLayout
from .fiber import Fiber, layout, parameters_of


def _order_layout(fiber: Fiber, mmax: int, edge_layout: EdgeLayout) -> tuple[list[int], list[int]]:
    """For the order-major blocks of orders up to ``mmax`` (see ``FiberLayout.order_index``): the
    edge-layout slot each position comes from, and block widths: ``sizes[m]`` is the width of one
    ``+-m`` block, ``sum_{l >= m} C_l``.  When the edge layout is order-major itself, the slots
    are ``0, 1, ...``: the blocks are a prefix of the features and need no gather.
    """
    sizes = [sum(fiber[m:]) for m in range(mmax + 1)]
    used = sizes[0] + 2 * sum(sizes[1:])  # m = 0 once, every m > 0 as +m and -m
    order = layout(fiber).order_index[:used]  # (used,) degree-major positions
    return edge_layout.slots(fiber)[order].tolist(), sizes


class SO2Convolution(nn.Module):
    """Equivariant linear map of edge-frame features, flat ``fiber_in -> fiber_out``.

    ``forward(x, scale, zero_length)``: ``x`` is ``(E, F_in)`` in the edge frame (in the layout
    ``EdgeGeometry.rotate`` produces, ``EdgeLayout.for_tensor_product("so2")``), ``scale`` an
    optional ``(E, sum_l C_in_l)`` factor for every input (degree, channel), e.g. from a radial
    network.  Rows listed in ``zero_length`` (edges without a direction) get the rotation average
    of the map, which is what the Clebsch-Gordan path computes there.

    With ``reflection=True`` the ``+m <-> -m`` mixing is dropped: exactly the tensor-product paths
    with ``l_in + l_filter + l_out`` even, which keep parity ``(-1)^l`` (E(3) equivariance).

    ``mmax``: only orders ``|m| <= mmax`` are kept (eSCN, EquiformerV2); ``x`` and the output then
    hold only those components (``EdgeLayout.width``).  Rows without a direction get the rotation
    average of the map for degrees ``l <= mmax`` and zeros above (see ``EdgeGeometry.on_graph``).
    """

    def __init__(
        self, fiber_in: Fiber, fiber_out: Fiber, reflection: bool = False, dense: bool | None = None, mmax: int | None = None
    ):
        super().__init__()
        self.fiber_in, self.fiber_out, self.reflection = tuple(fiber_in), tuple(fiber_out), reflection
        lmax = max(len(fiber_in), len(fiber_out)) - 1
        edge_layout = EdgeLayout.for_tensor_product("so2", reflection, mmax, lmax)  # the layout rotations produce
        # orders computed: those both fibers have, and none that the layout drops
        self.mmax = min(len(fiber_in), len(fiber_out)) - 1
        if edge_layout.mmax is not None:
            self.mmax = min(self.mmax, edge_layout.mmax)
        lay_in = layout(self.fiber_in)
        self.width_in, self.width_out = edge_layout.width(self.fiber_in), edge_layout.width(self.fiber_out)
        # the edge-layout slots of the order-major blocks (order-major layouts: no gathers needed)
        in_slots, self.in_sizes = _order_layout(self.fiber_in, self.mmax, edge_layout)
        out_slots, self.out_sizes = _order_layout(self.fiber_out, self.mmax, edge_layout)
        self.in_order_major = edge_layout.order_major(self.fiber_in)
        self.out_order_major = edge_layout.order_major(self.fiber_out)

        self.weight_real = nn.ParameterList()  # W1: +m -> +m and -m -> -m
        self.weight_imag = nn.ParameterList()  # W2: +m -> -m, and -W2: -m -> +m
        for m in range(self.mmax + 1):
            k_in, k_out = self.in_sizes[m], self.out_sizes[m]
            paths = 1 if (m == 0 or reflection) else 2
            std = 1.0 / math.sqrt(k_in * paths)
            self.weight_real.append(nn.Parameter(torch.randn(k_in, k_out, device=torch.get_default_device()) * std))
            if m > 0 and not reflection:
                self.weight_imag.append(nn.Parameter(torch.randn(k_in, k_out, device=torch.get_default_device()) * std))

        exact = sum(
            k_i * k_o * (1 if m == 0 else 2 * (1 if reflection else 2))
            for m, (k_i, k_o) in enumerate(zip(self.in_sizes, self.out_sizes))
        )
        # measured on CPU (forward + backward): one dense GEMM beats the per-order GEMMs and
        # gathers only while it does less than ~2.7x the exact flops
        self.dense = dense if dense is not None else self.width_in * self.width_out <= 2.7 * exact

        # index buffers, all derived from the edge layout: the gather of the input's order blocks
        # (unused when order-major), the (degree, channel) of every input slot for the scale
        self.register_buffer("in_index", torch.tensor(in_slots, device="cpu"), persistent=False)
        self.register_buffer("scale_index", lay_in.channel_index[edge_layout.positions(self.fiber_in)], persistent=False)
        # per-order outputs -> output slots; components of order > mmax point at an extra zero column
        inverse = torch.full((self.width_out,), len(out_slots), dtype=torch.long, device="cpu")
        inverse[torch.tensor(out_slots, device="cpu")] = torch.arange(len(out_slots), device="cpu")
        self.register_buffer("out_inverse", inverse, persistent=False)
        # edge layout <-> degree-major, for the few rows handled without a frame: degrees up to
        # mmax, which the edge layout keeps whole
        self.register_buffer("in_to_degree", edge_layout.slots(self.fiber_in)[: lay_in.offsets[self.mmax + 1]], persistent=False)
        self.register_buffer("degree_to_out", edge_layout.positions(self.fiber_out), persistent=False)
        self.register_buffer("dense_target", self._dense_targets(in_slots, out_slots, self.width_out), persistent=False)

    def _dense_targets(self, in_slots: list[int], out_slots: list[int], f_out: int) -> Tensor:
        """Flat position in the dense ``(F_in, F_out)`` matrix (on edge-layout slots) of every
        entry of ``_values()``."""
        targets = []
        start_in = start_out = 0
        for m in range(self.mmax + 1):
            ki, ko = self.in_sizes[m], self.out_sizes[m]
            rows = torch.tensor(in_slots[start_in : start_in + ki], device="cpu")
            cols = torch.tensor(out_slots[start_out : start_out + ko], device="cpu")
            if m == 0:
                targets.append((rows[:, None] * f_out + cols[None, :]).flatten())
                start_in, start_out = ki, ko
                continue
            rows_m = torch.tensor(in_slots[start_in + ki : start_in + 2 * ki], device="cpu")
            cols_m = torch.tensor(out_slots[start_out + ko : start_out + 2 * ko], device="cpu")
            start_in, start_out = start_in + 2 * ki, start_out + 2 * ko
            targets.append((rows[:, None] * f_out + cols[None, :]).flatten())  # W1: + -> +
            targets.append((rows_m[:, None] * f_out + cols_m[None, :]).flatten())  # W1: - -> -
            if not self.reflection:
                targets.append((rows[:, None] * f_out + cols_m[None, :]).flatten())  # W2: + -> -
                targets.append((rows_m[:, None] * f_out + cols[None, :]).flatten())  # -W2: - -> +
        return torch.cat(targets)

    def _values(self) -> Tensor:
        real, imag = parameters_of(self.weight_real), parameters_of(self.weight_imag)
        values = [real[0].flatten()]
        for m in range(1, self.mmax + 1):
            w1 = real[m].flatten()
            values += [w1, w1]
            if not self.reflection:
                w2 = imag[m - 1].flatten()
                values += [w2, -w2]
        return torch.cat(values)

    def dense_weight(self) -> Tensor:
        """The whole map as one ``(F_e_in, F_e_out)`` matrix on edge-layout flat features."""
        values = self._values()
        dense = values.new_zeros(self.width_in * self.width_out).index_put((self.dense_target,), values)
        return dense.view(self.width_in, self.width_out)

    def prepare(self, x: Tensor, scale: Tensor | None) -> Tensor | list[Tensor]:
        """Scaled input in the form this convolution multiplies (shareable by convolutions of
        the same input fiber and execution mode): one tensor (dense) or per-order blocks."""
        if self.dense:
            return x if scale is None else x * scale.index_select(1, self.scale_index)
        h = x if self.in_order_major else x.index_select(1, self.in_index)  # order-major
        return self.order_blocks(h, scale)

    def order_blocks(self, h: Tensor, scale: Tensor | None = None) -> list[Tensor]:
        """The ``[x_+m | x_-m]`` blocks of an order-major input, m = 0..mmax, each scaled by the
        per-(degree, channel) factors: order m holds degrees l >= m, a suffix of the scale
        vector, so it broadcasts over +-m without an expanded copy."""
        sizes = [self.in_sizes[0]] + [2 * k for k in self.in_sizes[1:]]
        rest = h.shape[1] - sum(sizes)  # orders above mmax (input has more degrees than output)
        blocks = list(h.split(sizes + [rest] if rest else sizes, dim=1))[: len(sizes)]
        if scale is None:
            return blocks
        edges, total = scale.shape
        out = [blocks[0] * scale]
        for m, block in enumerate(blocks[1:], start=1):
            k = self.in_sizes[m]
            out.append((block.view(edges, 2, k) * scale[:, total - k :].unsqueeze(1)).view(edges, 2 * k))
        return out

    def assemble(self, outputs: list[Tensor]) -> Tensor:
        """Per-order outputs -> the edge layout of the output fiber."""
        edges = outputs[0].shape[0]
        if self.out_order_major:
            missing = self.width_out - sum(o.shape[1] for o in outputs)
            return torch.cat(outputs + [outputs[0].new_zeros(edges, missing)] if missing else outputs, dim=-1)
        outputs = outputs + [outputs[0].new_zeros(edges, 1)]  # target of components with m > mmax
        return torch.cat(outputs, dim=-1).index_select(1, self.out_inverse)

    def apply_prepared(self, h: Tensor | list[Tensor]) -> Tensor:
        if self.dense:
            return h @ self.dense_weight()  # (E, F_out)
        return self.assemble([block @ w for block, w in zip(h, self.order_weights())])  # one GEMM per order

    @property
    def block_widths(self) -> list[int] | None:
        """Widths of the output's order blocks ``[x_0 | x_+1 x_-1 | ...]`` when the output is
        order-major and made of exactly those blocks (``output_blocks`` applies), else None."""
        widths = [self.out_sizes[0]] + [2 * k for k in self.out_sizes[1:]]
        return widths if self.out_order_major and sum(widths) == self.width_out else None

    def output_blocks(self, x: Tensor, scale: Tensor | None = None, zero_length: Tensor | None = None) -> list[Tensor]:
        """``forward``'s output as its order blocks (see ``block_widths``), without concatenating
        the per-order products: layers that act on each order apart (gates, per-head weights
        broadcast over ``+-m``) then concatenate once, at the end."""
        if self.dense or (zero_length is not None and zero_length.numel()):
            return list(self(x, scale, zero_length).split(self.block_widths, dim=1))
        return [block @ w for block, w in zip(self.prepare(x, scale), self.order_weights())]  # one GEMM per order

    def forward(
        self, x: Tensor, scale: Tensor | None = None, zero_length: Tensor | None = None, prepared: Tensor | list[Tensor] | None = None
    ) -> Tensor:
        """``prepared``: ``prepare(x, scale)`` if already made (shared by several convolutions)."""
        out = self.apply_prepared(prepared if prepared is not None else self.prepare(x, scale))
        if zero_length is not None and zero_length.numel():
            out = out.index_copy(0, zero_length, self._isotropic(x.index_select(0, zero_length), None if scale is None else scale.index_select(0, zero_length)))
        return out

    def order_weights(self) -> list[Tensor]:
        """Per order m, the matrix acting on ``[x_+m | x_-m]``: ``[[W1, W2], [-W2, W1]]``."""
        real, imag = parameters_of(self.weight_real), parameters_of(self.weight_imag)
        weights = [real[0]]
        for m in range(1, self.mmax + 1):
            w1 = real[m]
            if self.reflection:
                weights.append(torch.block_diag(w1, w1))
                continue
            w2 = imag[m - 1]
            weights.append(torch.cat([torch.cat([w1, w2], 1), torch.cat([-w2, w1], 1)], 0))  # (2K, 2K')
        return weights

    def isotropic_weights(self) -> list[Tensor]:
        """Rotation average of the map, degree l -> l: ``(W^0 + 2 sum_{m=1}^{l} W1^m)_{ll} / (2l+1)``."""
        weights = []
        for l in range(self.mmax + 1):
            total = 0
            for m in range(l + 1):
                # within order-m blocks, degree l starts after degrees m..l-1
                ri, ro = sum(self.fiber_in[m:l]), sum(self.fiber_out[m:l])
                block = parameters_of(self.weight_real)[m][ri : ri + self.fiber_in[l], ro : ro + self.fiber_out[l]]
                total = total + (block if m == 0 else 2 * block)
            weights.append(total / (2 * l + 1))
        return weights

    def _isotropic(self, x: Tensor, scale: Tensor | None) -> Tensor:
        """Rows without a direction (their frame is the identity): degree-wise averaged map of
        degrees up to ``mmax``.  ``x`` in the edge layout; the result too."""
        lay_in, lay_out = layout(self.fiber_in), layout(self.fiber_out)
        if scale is not None:
            x = x * scale.index_select(1, self.scale_index)
        x = x.index_select(1, self.in_to_degree)  # edge layout -> degree-major, degrees <= mmax
        degrees = x.split(lay_in.block_sizes[: self.mmax + 1], dim=1)
        parts = []
        for l, w in enumerate(self.isotropic_weights()):
            block = degrees[l].view(x.shape[0], 2 * l + 1, self.fiber_in[l])
            parts.append((block @ w).reshape(x.shape[0], (2 * l + 1) * w.shape[1]))
        parts.append(x.new_zeros(x.shape[0], lay_out.size - lay_out.offsets[self.mmax + 1]))
        return torch.cat(parts, dim=-1).index_select(1, self.degree_to_out)  # degree-major -> edge layout
