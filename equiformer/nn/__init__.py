"""Equivariant layers on flat per-degree features ``(N, sum_l (2l+1) C_l)`` (see ``fiber``)."""
from .activation import Gate
from .attention import L2DistanceAttention, MLPAttention
from .cg_convolution import CGConvolution, so2_from_cg, tensor_product_paths
from .edge_convolution import EdgeConvolution
from .edge_geometry import EdgeGeometry, edge_vectors
from .edge_graph import EdgeGraph
from .edge_layout import EdgeLayout
from .feedforward import FeedForward
from .fiber import FiberLayout, gated_fiber, layout
from .linear import EquivariantLinear
from .norm import EquivariantLayerNorm
from .radial import GaussianBasis, RadialTrunk, polynomial_envelope
from .reversible import BlockSequence
from .so2_convolution import SO2Convolution

__all__ = [
    "BlockSequence",
    "CGConvolution",
    "EdgeConvolution",
    "EdgeGeometry",
    "EdgeGraph",
    "EdgeLayout",
    "EquivariantLayerNorm",
    "EquivariantLinear",
    "FeedForward",
    "FiberLayout",
    "Gate",
    "GaussianBasis",
    "L2DistanceAttention",
    "MLPAttention",
    "RadialTrunk",
    "SO2Convolution",
    "edge_vectors",
    "gated_fiber",
    "layout",
    "polynomial_envelope",
    "so2_from_cg",
    "tensor_product_paths",
]
