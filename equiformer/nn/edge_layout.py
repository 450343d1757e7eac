"""The per-edge feature layout: decided once per model, by the tensor-product choice.

Edge features pass through several layers between their rotation into the edge frames and their
rotation back (convolutions, gates, per-head weighting, key-query comparison), and every one of
them must read the flat ``(E, F)`` tensor in the same order.  ``EdgeLayout`` is the one place
that order is decided; layers precompute their index buffers from its ``positions`` / ``slots``
and ``EdgeGeometry.rotate`` writes features in it.

* ``"so2"`` (fast path): features are rotated into each edge's own frame.  When every degree
  ``l >= 1`` of a fiber has the same channel count, the frame layout is *order-major*
  (``FiberLayout.order_index``): the rotation then emits exactly the ``+-m`` blocks the SO(2)
  convolution multiplies, so no gather is needed around it.  Other fibers stay degree-major.
* ``"cg"`` (reference path): features stay in the global frame, degree-major; the convolution
  uses the edge harmonics instead of a frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .fiber import Fiber, layout

TENSOR_PRODUCTS = ("so2", "cg")


@dataclass(frozen=True)
class EdgeLayout:
    """The tensor product every edge layer of a model uses, and the edge layout it implies.

    ``tensor_product``: ``"so2"`` or ``"cg"`` (checked here, the one place that knows the names).
    ``reflection``: E(3) rather than SE(3) equivariance, which the convolutions read.  Immutable
    and hashable; made once per model (``for_tensor_product``) and handed to the layers.
    """

    tensor_product: str = "so2"
    reflection: bool = False

    def __post_init__(self) -> None:
        if self.tensor_product not in TENSOR_PRODUCTS:
            raise ValueError(f"tensor_product must be one of {TENSOR_PRODUCTS}, got {self.tensor_product!r}")

    @classmethod
    def for_tensor_product(cls, tensor_product: str, reflection: bool = False) -> EdgeLayout:
        """The layout of ``tensor_product`` (``"so2"`` or ``"cg"``); a ``ValueError`` names the
        choices otherwise."""
        return cls(tensor_product, bool(reflection))

    @property
    def in_edge_frames(self) -> bool:
        """Whether edge features are rotated into per-edge frames (SO(2)); else they stay in the
        global frame and the convolution takes the edge harmonics (Clebsch-Gordan)."""
        return self.tensor_product == "so2"

    def order_major(self, fiber: Fiber) -> bool:
        """Whether ``fiber``'s edge features are order-major: SO(2) path and one channel count for
        every degree >= 1, so the frame rotation of all those degrees is one product whose rows
        come out in the order the per-order GEMMs consume."""
        return self.tensor_product == "so2" and len(set(fiber[1:])) <= 1

    def positions(self, fiber: Fiber) -> Tensor:
        """``(F,)`` index, the degree-major position of every edge-layout slot:
        ``x_edge = x_degree_major[:, positions]``.  A fresh CPU tensor: modules keep it (or maps
        derived from it) as a non-persistent buffer, which follows ``.to()``."""
        lay = layout(tuple(fiber))
        return lay.order_index.clone() if self.order_major(fiber) else torch.arange(lay.size, device="cpu")

    def slots(self, fiber: Fiber) -> Tensor:
        """``(F,)`` CPU index: the edge-layout slot of every degree-major position, the inverse of
        ``positions``, so ``x_degree_major = x_edge[:, slots]``."""
        lay = layout(tuple(fiber))
        return lay.order_inverse.clone() if self.order_major(fiber) else torch.arange(lay.size, device="cpu")


__all__ = ["TENSOR_PRODUCTS", "EdgeLayout"]
