"""Clebsch-Gordan edge convolution: the reference path of the equivariant tensor product.

``out_lo = sum_{l_in, l_f} sqrt(2 l_o + 1) CG(x_l_in (x) Y_l_f(edge)) @ W_{l_in, l_f, l_o}``, in the
global frame, with the edge's spherical harmonics ``Y``.  Costs O(L^6) per edge; it exists as the
oracle that ``SO2Convolution`` must agree with (``so2_from_cg`` maps the weights exactly).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..so3 import clebsch_gordan
from ..so3.constants import outside_transforms
from .edge_layout import EdgeLayout
from .fiber import Fiber, layout
from .so2_convolution import SO2Convolution


def tensor_product_paths(fiber_in: Fiber, fiber_out: Fiber, reflection: bool) -> list[tuple[int, int, int]]:
    """All ``(l_in, l_filter, l_out)`` allowed by the triangle rule (and parity, if reflection)."""
    return [
        (li, lf, lo)
        for li in range(len(fiber_in))
        for lo in range(len(fiber_out))
        for lf in range(abs(li - lo), li + lo + 1)
        if not reflection or (li + lf + lo) % 2 == 0
    ]


class CGConvolution(nn.Module):
    """Same interface as ``SO2Convolution`` but in the global frame, using the edge harmonics.

    ``forward(x, sh, scale)``: flat ``x`` of shape ``(E, F_in)``, ``sh`` the component-normalised
    harmonics of the edge directions up to degree ``filter_lmax``, ``scale`` as in SO(2).
    """

    def __init__(self, fiber_in: Fiber, fiber_out: Fiber, reflection: bool = False):
        super().__init__()
        self.fiber_in, self.fiber_out, self.reflection = tuple(fiber_in), tuple(fiber_out), reflection
        self.paths = tensor_product_paths(self.fiber_in, self.fiber_out, reflection)
        self.filter_lmax = len(fiber_in) + len(fiber_out) - 2
        fan_in = [0] * len(fiber_out)
        for li, _, lo in self.paths:
            fan_in[lo] += fiber_in[li]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(fiber_in[li], fiber_out[lo], device=torch.get_default_device()) / math.sqrt(fan_in[lo]))
            for li, _, lo in self.paths
        )
        # exact float64 constants, copied once per (dtype, device) actually used; kept out of
        # the state dict and out of .to() so that float32 -> float64 round trips stay exact
        self._couplings: dict[tuple, list[Tensor]] = {}
        positions = EdgeLayout.for_tensor_product("cg", reflection).positions(self.fiber_in)  # global frame: degree-major
        self.register_buffer("scale_index", layout(self.fiber_in).channel_index[positions], persistent=False)

    def couplings(self, dtype: torch.dtype, device: torch.device) -> list[Tensor]:
        key = (dtype, device)
        if key not in self._couplings:
            with outside_transforms():  # kept for later calls: plain tensors, even under torch.func
                self._couplings[key] = self._make_couplings(dtype, device)
        return self._couplings[key]

    def _make_couplings(self, dtype: torch.dtype, device: torch.device) -> list[Tensor]:
        return [
            (clebsch_gordan(li, lf, lo, dtype=torch.float64) * math.sqrt(2 * lo + 1)).to(dtype=dtype, device=device)
            for li, lf, lo in self.paths
        ]

    def forward(self, x: Tensor, sh: Tensor, scale: Tensor | None = None) -> Tensor:
        lay_in, lay_out = layout(self.fiber_in), layout(self.fiber_out)
        if scale is not None:
            x = x * scale.index_select(1, self.scale_index)
        xs = lay_in.split(x)  # [(E, 2l+1, C_l)]
        out = [x.new_zeros(x.shape[0], 2 * l + 1, c) for l, c in enumerate(self.fiber_out)]
        couplings = self.couplings(x.dtype, x.device)
        for i, (li, lf, lo) in enumerate(self.paths):
            y = sh[:, lf * lf : (lf + 1) ** 2]  # (E, 2lf+1)
            coupled = torch.einsum("eic,ef,ifo->eoc", xs[li], y, couplings[i])
            out[lo] = out[lo] + coupled @ self.weights[i]  # (E, 2lo+1, C_out)
        return lay_out.merge(out)


def so2_from_cg(cg: CGConvolution) -> SO2Convolution:
    """The SO(2) convolution that computes exactly the same function as ``cg``.

    In the edge frame the edge's harmonics are ``Y_lf = sqrt(2 lf + 1)`` at ``m = 0`` and zero
    elsewhere, so each path becomes a fixed matrix between orders ``+-m``; summing paths gives the
    per-order weights.
    """
    weight = cg.weights[0]
    so2 = SO2Convolution(cg.fiber_in, cg.fiber_out, reflection=cg.reflection).to(device=weight.device, dtype=weight.dtype)
    fin, fout = cg.fiber_in, cg.fiber_out
    with torch.no_grad():
        for w in [*so2.weight_real, *so2.weight_imag]:
            w.zero_()
        for i, (li, lf, lo) in enumerate(cg.paths):
            # (2li+1, 2lo+1): coefficient from input order mi to output order mo in the edge frame
            a = cg.couplings(torch.float64, torch.device("cpu"))[i][:, lf, :] * math.sqrt(2 * lf + 1)
            w = cg.weights[i].double()
            for m in range(min(li, lo) + 1):
                ri, ro = sum(fin[m:li]), sum(fout[m:lo])
                rows, cols = slice(ri, ri + fin[li]), slice(ro, ro + fout[lo])
                real = a[li + m, lo + m]
                so2.weight_real[m].data[rows, cols] += (real * w).to(so2.weight_real[m].dtype)
                if m > 0 and not cg.reflection:
                    imag = a[li + m, lo - m]
                    so2.weight_imag[m - 1].data[rows, cols] += (imag * w).to(so2.weight_imag[m - 1].dtype)
    return so2
