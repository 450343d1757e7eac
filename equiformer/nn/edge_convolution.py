"""One interface over the two tensor-product paths, so layers do not care which one runs."""
from __future__ import annotations

from torch import Tensor, nn

from .cg_convolution import CGConvolution
from .edge_geometry import TENSOR_PRODUCTS, EdgeGeometry
from .fiber import Features, Fiber
from .so2_convolution import SO2Convolution


class EdgeConvolution(nn.Module):
    """Equivariant per-edge map ``fiber_in -> fiber_out`` of features in the edge frame.

    ``tensor_product="so2"``: one GEMM per order m (fast path).  ``"cg"``: Clebsch-Gordan tensor
    product with the edge harmonics in the global frame (reference path).  Both compute the same
    family of functions; ``so2_from_cg`` maps one onto the other exactly.
    """

    def __init__(self, fiber_in: Fiber, fiber_out: Fiber, tensor_product: str = "so2", reflection: bool = False):
        super().__init__()
        if tensor_product not in TENSOR_PRODUCTS:
            raise ValueError(f"tensor_product must be one of {TENSOR_PRODUCTS}, got {tensor_product!r}")
        self.tensor_product = tensor_product
        klass = SO2Convolution if tensor_product == "so2" else CGConvolution
        self.inner = klass(fiber_in, fiber_out, reflection=reflection)

    def forward(self, x: Features, geometry: EdgeGeometry, scale: Tensor | None = None) -> Features:
        if self.tensor_product == "so2":
            return self.inner(x, scale, geometry.zero_length)
        return self.inner(x, geometry.sh, scale)
