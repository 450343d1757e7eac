"""One interface over the two tensor-product paths, so layers do not care which one runs."""
from __future__ import annotations

from torch import Tensor, nn

from .cg_convolution import CGConvolution
from .edge_geometry import EdgeGeometry
from .edge_layout import EdgeLayout
from .fiber import Fiber
from .so2_convolution import SO2Convolution


class EdgeConvolution(nn.Module):
    """Equivariant per-edge map ``fiber_in -> fiber_out`` of flat features in the edge frame.

    ``edge_layout``, the model's tensor product: ``"so2"``, one GEMM per order m in the edge frame
    (fast path); ``"cg"``, Clebsch-Gordan tensor product with the edge harmonics in the global
    frame (reference path; ``EdgeGeometry.rotate`` is then the identity).  Both compute the same
    family of functions; ``so2_from_cg`` maps one onto the other exactly.  ``x`` and the output
    are in the edge layout ``edge_layout`` gives their fibers.
    """

    def __init__(self, fiber_in: Fiber, fiber_out: Fiber, edge_layout: EdgeLayout):
        super().__init__()
        self.edge_layout = edge_layout
        self.fiber_in, self.fiber_out = tuple(fiber_in), tuple(fiber_out)
        self.in_edge_frames = edge_layout.in_edge_frames
        if self.in_edge_frames:
            self.inner = SO2Convolution(fiber_in, fiber_out, reflection=edge_layout.reflection, mmax=edge_layout.mmax)
        else:
            self.inner = CGConvolution(fiber_in, fiber_out, reflection=edge_layout.reflection)

    @property
    def block_widths(self) -> list[int] | None:
        """The output's order blocks (SO(2) path, order-major output; see
        ``SO2Convolution.block_widths``), else None."""
        return self.inner.block_widths if self.in_edge_frames else None

    def output_blocks(self, x: Tensor, geometry: EdgeGeometry, scale: Tensor | None = None) -> list[Tensor]:
        """``forward``'s output split into its order blocks (needs ``block_widths``)."""
        return self.inner.output_blocks(x, scale, geometry.zero_length)

    def forward(self, x: Tensor, geometry: EdgeGeometry, scale: Tensor | None = None) -> Tensor:
        if self.in_edge_frames:
            return self.inner(x, scale, geometry.zero_length)
        return self.inner(x, geometry.sh, scale)

    @staticmethod
    def apply_all(convs: list[EdgeConvolution], x: Tensor, geometry: EdgeGeometry, scale: Tensor | None) -> list[Tensor]:
        """Several SO(2) convolutions of the same input share its scaled, re-laid-out copy.

        Each still runs its own matrix products: one product for all of them, split afterwards,
        was measured slower forward+backward on CPU (the backward of that split concatenates
        every output gradient)."""
        inner = [c.inner for c in convs]
        same = all(
            isinstance(c, SO2Convolution) and (c.dense, c.fiber_in, c.mmax) == (inner[0].dense, inner[0].fiber_in, inner[0].mmax)
            for c in inner
        )
        if not same:
            return [c(x, geometry, scale) for c in convs]
        h = inner[0].prepare(x, scale)
        return [c(x, scale, geometry.zero_length, prepared=h) for c in inner]
