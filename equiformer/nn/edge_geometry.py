"""Per-forward edge constants shared by every layer: frames, harmonics, radial inputs, envelopes.

Computed once from coordinates with autograd on (forces flow through all of it), then passed to
every block.  ``to_edge_frame`` / ``from_edge_frame`` are the only places features change frame.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..so3 import edge_to_axis_rotation, spherical_harmonics, wigner_D
from .fiber import Features

TENSOR_PRODUCTS = ("so2", "cg")


def edge_vectors(pos: Tensor, dst: Tensor, src: Tensor) -> tuple[Tensor, Tensor]:
    """``(vec, dist)``: ``pos[src] - pos[dst]`` (E, 3) and its length (E,), with a finite gradient
    for coincident nodes."""
    vec = pos.index_select(0, src) - pos.index_select(0, dst)
    sq = (vec * vec).sum(-1)
    nonzero = sq > 0
    dist = torch.where(nonzero, torch.sqrt(torch.where(nonzero, sq, torch.ones_like(sq))), torch.zeros_like(sq))
    return vec, dist


@dataclass
class EdgeGeometry:
    """Edges ``src -> dst`` over ``num_nodes`` packed nodes, with everything layers need.

    ``wigner[l]``: ``(E, 2l+1, 2l+1)`` rotations into the edge frame (SO(2) path only).
    ``sh``: ``(E, (L_f+1)^2)`` edge harmonics (Clebsch-Gordan path only).
    ``weight``: ``(E,)`` smooth cutoff factor for aggregation and attention.
    ``edge_attr``: ``(E, F)`` invariant edge scalars for the radial networks.
    ``zero_length``: indices of edges whose two nodes coincide (no direction).
    ``node_graph``: ``(N,)`` graph index of every node, for global (per-graph) layers.
    """

    dst: Tensor
    src: Tensor
    num_nodes: int
    node_graph: Tensor
    num_graphs: int
    weight: Tensor
    edge_attr: Tensor
    zero_length: Tensor
    wigner: list[Tensor] | None = None
    sh: Tensor | None = None

    @staticmethod
    def build(
        vec: Tensor,
        dst: Tensor,
        src: Tensor,
        num_nodes: int,
        node_graph: Tensor,
        num_graphs: int,
        weight: Tensor,
        edge_attr: Tensor,
        lmax: int,
        tensor_product: str,
    ) -> "EdgeGeometry":
        """``vec``: ``(E, 3)`` edge vectors ``pos[src] - pos[dst]`` (see ``edge_vectors``)."""
        zero_length = ((vec * vec).sum(-1) == 0).nonzero().flatten()
        wigner = sh = None
        if tensor_product == "so2":
            wigner = wigner_D(lmax, edge_to_axis_rotation(vec))
        elif tensor_product == "cg":
            sh = spherical_harmonics(2 * lmax, vec)
        else:
            raise ValueError(f"tensor_product must be one of {TENSOR_PRODUCTS}, got {tensor_product!r}")
        return EdgeGeometry(dst, src, num_nodes, node_graph, num_graphs, weight, edge_attr, zero_length, wigner, sh)

    def to_edge_frame(self, x: Features) -> Features:
        if self.wigner is None:
            return x
        return [d @ t for d, t in zip(self.wigner, x)]  # (E, 2l+1, 2l+1) @ (E, 2l+1, C)

    def from_edge_frame(self, x: Features) -> Features:
        if self.wigner is None:
            return x
        return [d.transpose(-1, -2) @ t for d, t in zip(self.wigner, x)]

    # --- plumbing for reversible blocks, which must hand every differentiable input to autograd
    def float_tensors(self) -> list[Tensor]:
        out = [self.weight, self.edge_attr]
        out += list(self.wigner) if self.wigner is not None else [self.sh]
        return out

    def with_float_tensors(self, tensors: list[Tensor]) -> "EdgeGeometry":
        weight, edge_attr, *rest = tensors
        if self.wigner is not None:
            return replace(self, weight=weight, edge_attr=edge_attr, wigner=list(rest))
        return replace(self, weight=weight, edge_attr=edge_attr, sh=rest[0])


__all__ = ["EdgeGeometry", "TENSOR_PRODUCTS", "edge_vectors"]
