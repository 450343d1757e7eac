"""SO(2) edge convolution: the fast path of the equivariant tensor product (eSCN, EquiformerV2).

In an edge's own frame (edge along the polar axis) a rotation-equivariant linear map of
harmonic features may only mix components of equal order ``|m|``, and between the ``+m`` and
``-m`` components only as a complex multiplication.  So the whole tensor product with the edge's
harmonics reduces to one matrix product per order ``m``: O(L^3) instead of O(L^6) per edge, and
the weights are shared by all edges (the radial network only rescales input features).

Inputs must already be rotated into the edge frame (``EdgeGeometry.to_edge_frame``).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .fiber import Features, Fiber, feature_size


def _order_layout(fiber: Fiber, mmax: int) -> tuple[list[int], list[int]]:
    """Gather index from degree-major flat features to an order-major layout, and block sizes.

    Order-major layout: ``[m=0 | m=1 (+) | m=1 (-) | m=2 (+) | ...]``; the block for order ``m``
    holds degrees ``l >= m`` with all their channels, degree by degree.  ``sizes[m]`` is that
    block's width, ``sum_{l >= m} C_l``.
    """
    offsets = [0]
    for l, c in enumerate(fiber):
        offsets.append(offsets[-1] + (2 * l + 1) * c)
    index: list[int] = []
    sizes = []
    for m in range(mmax + 1):
        for sign in (1, -1) if m else (1,):
            for l in range(m, len(fiber)):
                start = offsets[l] + (l + sign * m) * fiber[l]
                index.extend(range(start, start + fiber[l]))
        sizes.append(sum(fiber[m:]))
    return index, sizes


def _channel_index(fiber: Fiber, mmax: int) -> list[int]:
    """For each order-major position, the (degree, channel) position in ``cat_l C_l``."""
    starts = [sum(fiber[:l]) for l in range(len(fiber))]
    index: list[int] = []
    for m in range(mmax + 1):
        for _ in (1, -1) if m else (1,):
            for l in range(m, len(fiber)):
                index.extend(range(starts[l], starts[l] + fiber[l]))
    return index


class SO2Convolution(nn.Module):
    """Equivariant linear map of edge-frame features, ``fiber_in -> fiber_out``, one GEMM per order.

    ``forward(x, scale)``: ``x[l]`` is ``(E, 2l+1, C_in_l)`` in the edge frame, ``scale`` an optional
    ``(E, sum_l C_in_l)`` per-edge factor for every input (degree, channel), e.g. from a radial
    network.  Rows listed in ``zero_length`` (edges without a direction) get the rotation average
    of the map, which is what the Clebsch-Gordan path computes there.

    With ``reflection=True`` the ``+m <-> -m`` mixing is dropped: exactly the tensor-product paths
    with ``l_in + l_filter + l_out`` even, which keep parity ``(-1)^l`` (E(3) equivariance).
    """

    def __init__(self, fiber_in: Fiber, fiber_out: Fiber, reflection: bool = False):
        super().__init__()
        self.fiber_in, self.fiber_out, self.reflection = tuple(fiber_in), tuple(fiber_out), reflection
        self.mmax = min(len(fiber_in), len(fiber_out)) - 1
        in_index, self.in_sizes = _order_layout(self.fiber_in, self.mmax)
        out_index, self.out_sizes = _order_layout(self.fiber_out, self.mmax)
        self.register_buffer("in_index", torch.tensor(in_index), persistent=False)
        self.register_buffer("scale_index", torch.tensor(_channel_index(self.fiber_in, self.mmax)), persistent=False)
        # inverse of the output layout; components of order > mmax point at an extra zero column
        inverse = torch.full((feature_size(self.fiber_out),), len(out_index), dtype=torch.long)
        inverse[torch.tensor(out_index)] = torch.arange(len(out_index))
        self.register_buffer("out_inverse", inverse, persistent=False)

        self.weight_real = nn.ParameterList()  # W1: +m -> +m and -m -> -m
        self.weight_imag = nn.ParameterList()  # W2: +m -> -m, and -W2: -m -> +m
        for m in range(self.mmax + 1):
            k_in, k_out = self.in_sizes[m], self.out_sizes[m]
            paths = 1 if (m == 0 or reflection) else 2
            std = 1.0 / math.sqrt(k_in * paths)
            self.weight_real.append(nn.Parameter(torch.randn(k_in, k_out) * std))
            if m > 0 and not reflection:
                self.weight_imag.append(nn.Parameter(torch.randn(k_in, k_out) * std))

    def _order_major(self, x: Features, scale: Tensor | None) -> Tensor:
        flat = torch.cat([t.reshape(t.shape[0], -1) for t in x[: len(self.fiber_in)]], dim=-1)
        h = flat.index_select(1, self.in_index)  # (E, K_0 + 2 sum_m K_m)
        if scale is not None:
            h = h * scale.index_select(1, self.scale_index)
        return h

    def forward(self, x: Features, scale: Tensor | None = None, zero_length: Tensor | None = None) -> Features:
        h = self._order_major(x, scale)
        edges = h.shape[0]
        outputs = []
        start = 0
        for m in range(self.mmax + 1):
            k = self.in_sizes[m]
            if m == 0:
                outputs.append(h[:, :k] @ self.weight_real[0])  # (E, K'_0)
                start = k
                continue
            plus, minus = h[:, start : start + k], h[:, start + k : start + 2 * k]
            start += 2 * k
            w1 = self.weight_real[m]
            if self.reflection:
                outputs += [plus @ w1, minus @ w1]
                continue
            # one GEMM for both halves: [x+; x-] @ [W1 | W2]
            both = torch.cat([plus, minus], 0) @ torch.cat([w1, self.weight_imag[m - 1]], 1)  # (2E, 2K')
            k_out = w1.shape[1]
            p_re, p_im = both[:edges, :k_out], both[:edges, k_out:]
            n_re, n_im = both[edges:, :k_out], both[edges:, k_out:]
            outputs += [p_re - n_im, p_im + n_re]
        outputs.append(h.new_zeros(edges, 1))  # target of components with m > mmax
        flat = torch.cat(outputs, dim=-1).index_select(1, self.out_inverse)
        out = self._split(flat)
        if zero_length is not None and zero_length.numel():
            out = self._isotropic_rows(x, scale, zero_length, out)
        return out

    def _split(self, flat: Tensor) -> Features:
        sizes = [(2 * l + 1) * c for l, c in enumerate(self.fiber_out)]
        return [p.reshape(flat.shape[0], 2 * l + 1, c) for l, (p, c) in enumerate(zip(flat.split(sizes, -1), self.fiber_out))]

    def isotropic_weights(self) -> list[Tensor]:
        """Rotation average of the map, degree l -> l: ``(W^0 + 2 sum_{m=1}^{l} W1^m)_{ll} / (2l + 1)``."""
        weights = []
        for l in range(self.mmax + 1):
            total = 0
            for m in range(l + 1):
                # within order-m blocks, degree l starts after degrees m..l-1
                ri = sum(self.fiber_in[m:l])
                ro = sum(self.fiber_out[m:l])
                block = self.weight_real[m][ri : ri + self.fiber_in[l], ro : ro + self.fiber_out[l]]
                total = total + (block if m == 0 else 2 * block)
            weights.append(total / (2 * l + 1))
        return weights

    def _isotropic_rows(self, x: Features, scale: Tensor | None, rows: Tensor, out: Features) -> Features:
        starts = [sum(self.fiber_in[:l]) for l in range(len(self.fiber_in))]
        out = [t.clone() for t in out]
        for l, w in enumerate(self.isotropic_weights()):
            xl = x[l].index_select(0, rows)  # (Z, 2l+1, C_l)
            if scale is not None:
                xl = xl * scale.index_select(0, rows)[:, None, starts[l] : starts[l] + self.fiber_in[l]]
            out[l] = out[l].index_copy(0, rows, xl @ w)
        for l in range(self.mmax + 1, len(self.fiber_out)):
            out[l] = out[l].index_fill(0, rows, 0.0)
        return out
