"""Equivariant layers.  Features are lists ``x[l]`` of shape ``(N, 2l+1, C_l)`` (see ``fiber``)."""
from .activation import Gate, gated_fiber
from .attention import L2DistanceAttention, MLPAttention
from .cg_convolution import CGConvolution, so2_from_cg, tensor_product_paths
from .edge_convolution import EdgeConvolution
from .edge_geometry import EdgeGeometry, edge_vectors
from .feedforward import FeedForward
from .linear import EquivariantLinear
from .norm import EquivariantLayerNorm
from .radial import GaussianBasis, RadialMLP, polynomial_envelope
from .reversible import BlockSequence
from .so2_convolution import SO2Convolution

__all__ = [
    "BlockSequence",
    "CGConvolution",
    "EdgeConvolution",
    "EdgeGeometry",
    "EquivariantLayerNorm",
    "EquivariantLinear",
    "FeedForward",
    "Gate",
    "GaussianBasis",
    "L2DistanceAttention",
    "MLPAttention",
    "RadialMLP",
    "SO2Convolution",
    "edge_vectors",
    "gated_fiber",
    "polynomial_envelope",
    "so2_from_cg",
    "tensor_product_paths",
]
