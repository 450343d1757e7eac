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

``mmax`` (SO(2) path only) truncates the edge frame to orders ``|m| <= mmax`` (eSCN,
EquiformerV2): edge tensors hold only those components, so the rotation in keeps only those rows
and every layer between the two rotations works on the shorter tensor.  Each pair of ``+-m``
components spans a plane that the roll about the edge axis maps onto itself, so dropping whole
orders stays exactly equivariant.  In the order-major layout the kept orders are a prefix; a
degree-major fiber keeps its ``|m| <= mmax`` positions in their degree-major order.
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
    mmax: int | None = None

    def __post_init__(self) -> None:
        if self.tensor_product not in TENSOR_PRODUCTS:
            raise ValueError(f"tensor_product must be one of {TENSOR_PRODUCTS}, got {self.tensor_product!r}")
        if self.mmax is not None:
            if isinstance(self.mmax, bool) or not isinstance(self.mmax, int) or self.mmax < 0:
                raise ValueError(f"mmax must be None or an integer >= 0, got {self.mmax!r}")
            if self.tensor_product != "so2":
                raise ValueError(
                    f"mmax={self.mmax} needs tensor_product='so2': the Clebsch-Gordan path has no edge frame "
                    f"to truncate (got tensor_product={self.tensor_product!r})"
                )

    @classmethod
    def for_tensor_product(
        cls, tensor_product: str, reflection: bool = False, mmax: int | None = None, lmax: int | None = None
    ) -> EdgeLayout:
        """The layout of ``tensor_product`` (``"so2"`` or ``"cg"``); a ``ValueError`` names the
        choices otherwise.  ``mmax``: keep orders ``|m| <= mmax`` in the edge frames; with the
        features' ``lmax`` given, an ``mmax >= lmax`` truncates nothing and is dropped (so such a
        model is the untruncated one, for either tensor product)."""
        if mmax is not None and lmax is not None and mmax >= lmax:
            mmax = None
        return cls(tensor_product, bool(reflection), None if mmax is None else int(mmax))

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

    def truncates(self, fiber: Fiber) -> bool:
        """Whether ``fiber``'s edge features drop orders (``mmax`` below its highest degree)."""
        return self.mmax is not None and self.mmax < len(fiber) - 1

    def width(self, fiber: Fiber) -> int:
        """``F_e``, the number of edge-layout slots of ``fiber``: its flat size, less the dropped
        orders."""
        lay = layout(tuple(fiber))
        return lay.order_count(self.mmax) if self.truncates(fiber) else lay.size

    def positions(self, fiber: Fiber) -> Tensor:
        """``(F_e,)`` index, the degree-major position of every edge-layout slot:
        ``x_edge = x_degree_major[:, positions]``.  A fresh CPU tensor: modules keep it (or maps
        derived from it) as a non-persistent buffer, which follows ``.to()``."""
        lay = layout(tuple(fiber))
        if self.order_major(fiber):
            return lay.order_index[: self.width(fiber)].clone()  # kept orders: a prefix
        every = torch.arange(lay.size, device="cpu")
        return every[lay.abs_order_index <= self.mmax] if self.truncates(fiber) else every

    def slots(self, fiber: Fiber) -> Tensor:
        """``(F,)`` CPU index: the edge-layout slot of every degree-major position, the inverse of
        ``positions``, so ``x_degree_major = x_edge[:, slots]`` where nothing is truncated.
        Dropped positions hold -1, which any index op refuses."""
        positions = self.positions(fiber)
        slots = torch.full((layout(tuple(fiber)).size,), -1, dtype=torch.long, device="cpu")
        slots[positions] = torch.arange(len(positions), device="cpu")
        return slots

    def rotation_rows(self, fiber: Fiber, start: int, stop: int) -> tuple[int, ...] | None:
        """The rows of the frame rotation of degrees ``start..stop-1`` (indices into their stacked
        ``2l+1`` rows), in the order the edge layout stores them and without dropped orders;
        None for all rows in their own order.  Order-major fibers rotate degrees ``1..L`` as one
        block; degree-major ones per run of equal channel counts (``FiberLayout.rotation_groups``)."""
        lay = layout(tuple(fiber))
        if self.order_major(fiber):
            kept = sum(2 * min(l, self.mmax) + 1 for l in range(1, len(fiber))) if self.truncates(fiber) else None
            return lay.row_order[:kept]
        if self.mmax is None or stop - 1 <= self.mmax:  # no degree here has dropped orders
            return None
        return lay.rows_up_to_order(start, stop, self.mmax)


__all__ = ["TENSOR_PRODUCTS", "EdgeLayout"]
