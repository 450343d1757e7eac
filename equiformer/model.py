"""Equiformer: embeddings -> equivariant attention blocks -> heads.

The keyword names follow ``equiformer-pytorch`` so that switching is a one-line import change.
Internally the padded batch is packed into a flat list of real nodes and an edge list, so padding
never enters the computation and no ``n x n`` feature tensor is made.
"""
from __future__ import annotations

from collections import namedtuple
from typing import Sequence

import torch
from torch import Tensor, nn

from .graph import INF, adjacency_pairs, build_graph
from .nn.attention import L2DistanceAttention, MLPAttention
from .nn.edge_geometry import TENSOR_PRODUCTS, EdgeGeometry, edge_vectors
from .nn.feedforward import FeedForward
from .nn.fiber import as_fiber, layout
from .nn.input_embedding import InputEmbedding
from .nn.linear import EquivariantLinear
from .nn.norm import EquivariantLayerNorm
from .nn.radial import GaussianBasis, RadialTrunk, polynomial_envelope
from .nn.reversible import Block, BlockSequence
from .packing import padded_slots, sparse_edge_lookup, sparse_pairs

_ReturnBase = namedtuple("Return", ["type0", "type1"])


class Return(_ReturnBase):
    """``(type0, type1)`` like equiformer-pytorch; every degree is in ``.degrees`` (``.type2``...)."""

    def __new__(cls, degrees: dict[int, Tensor]):
        self = super().__new__(cls, degrees[0], degrees.get(1))
        self.degrees = degrees
        return self

    def __getnewargs__(self):
        return (self.degrees,)

    def __getattr__(self, name: str):
        if name.startswith("type") and name[4:].isdigit():
            return self.degrees.get(int(name[4:]))
        raise AttributeError(name)


class Equiformer(nn.Module):
    """SE(3)/E(3)-equivariant graph attention network on point clouds.

    Keyword arguments shared with equiformer-pytorch: ``dim`` (int or per-degree tuple),
    ``dim_in``, ``num_degrees``, ``input_degrees``, ``heads``, ``dim_head``, ``depth``,
    ``valid_radius``, ``num_neighbors`` (``inf``: all), ``reduce_dim_out``, ``radial_hidden_dim``,
    ``num_tokens``, ``num_positions``, ``num_edge_tokens``, ``edge_dim``, ``attend_self``,
    ``l2_dist_attention``, ``num_linear_attn_heads``, ``linear_attn_dim_head``,
    ``single_headed_kv``, ``gate_attn_head_outputs``, ``ff_include_htype_norms``, ``linear_out``,
    ``embedding_grad_frac``, ``reversible``, ``attend_sparse_neighbors``,
    ``num_adj_degrees_embed``, ``adj_dim``, ``max_sparse_neighbors``, ``attn_hidden_dim_mult``,
    ``attn_leakyrelu_slope``; ``splits`` is accepted and ignored (it tuned a memory trade-off
    that this implementation does not need).

    New: ``tensor_product`` (``"so2"`` fast path, ``"cg"`` Clebsch-Gordan reference),
    ``reflection_equivariance`` (E(3): degree-l features have parity ``(-1)^l``), ``ff_mult``,
    ``num_radial_basis`` and ``radial_max_distance`` (Gaussian distance basis on
    ``[0, radial_max_distance]``, default ``min(valid_radius, 20)``).
    """

    def __init__(
        self,
        *,
        dim: int | Sequence[int],
        dim_in: int | Sequence[int] | None = None,
        num_degrees: int = 2,
        input_degrees: int = 1,
        heads: int | Sequence[int] = 8,
        dim_head: int | Sequence[int] = 24,
        depth: int = 2,
        valid_radius: float = 1e5,
        num_neighbors: float = INF,
        reduce_dim_out: bool = False,
        radial_hidden_dim: int = 64,
        num_tokens: int | None = None,
        num_positions: int | None = None,
        num_edge_tokens: int | None = None,
        edge_dim: int | None = None,
        attend_self: bool = True,
        splits: int = 4,
        linear_out: bool = True,
        embedding_grad_frac: float = 0.5,
        single_headed_kv: bool = False,
        ff_include_htype_norms: bool = False,
        l2_dist_attention: bool = True,
        reversible: bool = False,
        attend_sparse_neighbors: bool = False,
        gate_attn_head_outputs: bool = True,
        num_adj_degrees_embed: int | None = None,
        adj_dim: int = 0,
        max_sparse_neighbors: float = INF,
        num_linear_attn_heads: int = 0,
        linear_attn_dim_head: int = 8,
        attn_hidden_dim_mult: int = 4,
        attn_leakyrelu_slope: float = 0.1,
        ff_mult: int = 4,
        tensor_product: str = "so2",
        reflection_equivariance: bool = False,
        num_radial_basis: int = 16,
        radial_max_distance: float | None = None,
    ):
        super().__init__()
        if num_degrees < 1:
            raise ValueError(f"num_degrees must be >= 1, got {num_degrees}")
        if not 1 <= input_degrees <= num_degrees:
            raise ValueError(f"input_degrees must be in 1..num_degrees ({num_degrees}), got {input_degrees}")
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        if tensor_product not in TENSOR_PRODUCTS:
            raise ValueError(f"tensor_product must be one of {TENSOR_PRODUCTS}, got {tensor_product!r}")
        if num_edge_tokens is not None and not edge_dim:
            raise ValueError("num_edge_tokens needs edge_dim (the width of the edge-token embedding) > 0")
        if num_adj_degrees_embed is not None and num_adj_degrees_embed < 1:
            raise ValueError(f"num_adj_degrees_embed must be >= 1, got {num_adj_degrees_embed}")
        if not attend_sparse_neighbors and num_neighbors == 0:
            raise ValueError("num_neighbors = 0 leaves nothing to attend to unless attend_sparse_neighbors=True")
        if num_neighbors < 0 or max_sparse_neighbors < 0:
            raise ValueError("num_neighbors and max_sparse_neighbors must be >= 0")
        if not valid_radius > 0:
            raise ValueError(f"valid_radius must be > 0, got {valid_radius}")
        if not 0.0 <= embedding_grad_frac <= 1.0:
            raise ValueError(f"embedding_grad_frac must be in [0, 1], got {embedding_grad_frac}")

        self.dim = as_fiber(dim, num_degrees, "dim")
        self.num_degrees = num_degrees
        heads = as_fiber(heads, num_degrees, "heads")
        dim_head = as_fiber(dim_head, num_degrees, "dim_head")
        self.dim_in = as_fiber(dim_in if dim_in is not None else self.dim[:input_degrees], input_degrees, "dim_in")
        self.input_degrees = input_degrees
        self.num_tokens, self.num_positions = num_tokens, num_positions
        self.valid_radius, self.num_neighbors = float(valid_radius), num_neighbors
        self.attend_sparse_neighbors = attend_sparse_neighbors
        self.num_adj_degrees_embed, self.max_sparse_neighbors = num_adj_degrees_embed, max_sparse_neighbors
        self.embedding_grad_frac = embedding_grad_frac
        self.tensor_product, self.reflection_equivariance = tensor_product, reflection_equivariance
        self.reduce_dim_out = reduce_dim_out

        self.token_emb = nn.Embedding(num_tokens, self.dim_in[0]) if num_tokens else None
        self.pos_emb = nn.Embedding(num_positions, self.dim_in[0]) if num_positions else None
        for emb in (self.token_emb, self.pos_emb):
            if emb is not None:
                nn.init.normal_(emb.weight, std=1e-2)

        # invariant edge scalars: distance basis | edge tokens or features | hop distance
        if radial_max_distance is None:
            radial_max_distance = min(self.valid_radius, 20.0)
        self.distance_basis = GaussianBasis(num_radial_basis, radial_max_distance)
        self.edge_dim = edge_dim or 0
        self.edge_emb = nn.Embedding(num_edge_tokens, edge_dim) if num_edge_tokens else None
        hop_classes = (num_adj_degrees_embed or 0) + 1
        self.hop_emb = nn.Embedding(hop_classes, adj_dim) if num_adj_degrees_embed and adj_dim > 0 else None
        hop_dim = (adj_dim if self.hop_emb is not None else hop_classes) if num_adj_degrees_embed else 0
        self.radial_trunk = RadialTrunk(num_radial_basis + self.edge_dim + hop_dim, radial_hidden_dim)

        conv = dict(tensor_product=tensor_product, reflection=reflection_equivariance)
        self.input_embedding = InputEmbedding(self.dim_in, self.dim, radial_hidden_dim, **conv)
        attention_class = L2DistanceAttention if l2_dist_attention else MLPAttention
        extra = {} if l2_dist_attention else dict(
            attn_hidden_dim_mult=attn_hidden_dim_mult, attn_leakyrelu_slope=attn_leakyrelu_slope
        )
        blocks = [
            Block(
                attention_class(
                    self.dim,
                    heads,
                    dim_head,
                    radial_hidden_dim,
                    attend_self=attend_self,
                    single_headed_kv=single_headed_kv,
                    gate_attn_head_outputs=gate_attn_head_outputs,
                    num_linear_attn_heads=num_linear_attn_heads,
                    linear_attn_dim_head=linear_attn_dim_head,
                    **conv,
                    **extra,
                ),
                FeedForward(self.dim, mult=ff_mult, include_htype_norms=ff_include_htype_norms),
            )
            for _ in range(depth)
        ]
        self.blocks = BlockSequence(blocks, self.dim, reversible=reversible)
        self.norm = EquivariantLayerNorm(self.dim)
        out_fiber = (1,) * num_degrees
        if not reduce_dim_out:
            self.head = None
        elif linear_out:
            self.head = EquivariantLinear(self.dim, out_fiber)
        else:
            self.head = FeedForward(self.dim, out_fiber, mult=ff_mult, zero_init_out=False)

    # ------------------------------------------------------------------ inputs
    def _input_features(self, inputs: Tensor | dict, b: int, n: int) -> dict[int, Tensor]:
        """Padded per-degree inputs: ``{0: (b, n, d0), l: (b, n, d_l, 2l+1)}``."""
        feats = dict(inputs) if isinstance(inputs, dict) else {0: inputs}
        if set(feats) != set(range(self.input_degrees)):
            raise ValueError(f"inputs must have degrees {list(range(self.input_degrees))}, got {sorted(feats)}")
        x0 = feats[0]
        if self.token_emb is not None:
            if x0.dtype.is_floating_point or x0.shape != (b, n):
                raise ValueError(f"inputs with num_tokens must be integer token ids of shape {(b, n)}, got {tuple(x0.shape)} {x0.dtype}")
            x0 = self.token_emb(x0)
        else:
            if x0.ndim == 4 and x0.shape[-1] == 1:
                x0 = x0[..., 0]
            if x0.shape != (b, n, self.dim_in[0]):
                raise ValueError(f"type-0 inputs must have shape {(b, n, self.dim_in[0])}, got {tuple(x0.shape)}")
        if self.pos_emb is not None:
            if n > self.num_positions:
                raise ValueError(f"sequence length {n} exceeds num_positions={self.num_positions}")
            x0 = x0 + self.pos_emb(torch.arange(n, device=x0.device))
        frac = self.embedding_grad_frac
        feats[0] = frac * x0 + (1 - frac) * x0.detach()
        for l in range(1, self.input_degrees):
            expected = (b, n, self.dim_in[l], 2 * l + 1)
            if tuple(feats[l].shape) != expected:
                raise ValueError(f"degree-{l} inputs must have shape {expected}, got {tuple(feats[l].shape)}")
        return feats

    def _edge_scalars(self, dist: Tensor, graph, edge_lookup) -> Tensor:
        parts = [self.distance_basis(dist)]  # (E, K)
        if self.edge_dim:
            if edge_lookup is None:
                raise ValueError("this model has edge embeddings (edge_dim): pass edges=(b, n, n) ids or (b, n, n, edge_dim) features")
            picked = edge_lookup(graph.dst, graph.src)  # (E,) ids or (E, edge_dim)
            parts.append(self.edge_emb(picked) if self.edge_emb is not None else picked.to(dist.dtype))
        if self.num_adj_degrees_embed:
            hop = graph.hop if graph.hop is not None else torch.zeros_like(graph.dst)
            if self.hop_emb is not None:
                parts.append(self.hop_emb(hop))
            else:
                parts.append(nn.functional.one_hot(hop, self.num_adj_degrees_embed + 1).to(dist.dtype))
        return torch.cat([p.to(dist.dtype) for p in parts], dim=-1)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        inputs: Tensor | dict,
        coors: Tensor,
        mask: Tensor | None = None,
        adj_mat: Tensor | None = None,
        edges: Tensor | None = None,
        return_pooled: bool = False,
    ) -> Return:
        if coors.ndim != 3 or coors.shape[-1] != 3:
            raise ValueError(f"coors must have shape (batch, nodes, 3), got {tuple(coors.shape)}")
        b, n, _ = coors.shape
        if mask is None:
            mask = torch.ones(b, n, dtype=torch.bool, device=coors.device)
        mask = mask.bool()
        feats = self._input_features(inputs, b, n)
        if adj_mat is not None and adj_mat.ndim == 2:
            adj_mat = adj_mat[None].expand(b, n, n)
        needs_adjacency = self.attend_sparse_neighbors or self.num_adj_degrees_embed
        if needs_adjacency and adj_mat is None:
            raise ValueError("adj_mat (n, n) or (b, n, n) is required with attend_sparse_neighbors or num_adj_degrees_embed")

        node_ids = mask.reshape(-1).nonzero().flatten()  # padded-flat ids of real nodes
        x = self._pack_features(feats, node_ids, b * n)
        adjacency = adjacency_pairs(adj_mat, mask) if needs_adjacency else None
        edge_lookup = None
        if edges is not None:
            flat_edges = edges.reshape(b * n, n, *edges.shape[3:])
            edge_lookup = lambda dst, src: flat_edges[dst, src % n]  # noqa: E731
        x = self._run(x, coors, mask, node_ids, adjacency, edge_lookup)
        return Return(self._unpack(x, node_ids, mask, return_pooled))

    def forward_packed(
        self,
        inputs: Tensor | dict,
        coors: Tensor,
        graph_index: Tensor | None = None,
        adjacency: Tensor | None = None,
        edge_index: Tensor | None = None,
        edge_attr: Tensor | None = None,
    ) -> Return:
        """Many graphs of different sizes in one call, without padding.

        ``inputs``: token ids ``(N,)``, features ``(N, d0)``, or ``{0: (N, d0), l: (N, d_l, 2l+1)}``;
        ``coors``: ``(N, 3)``; ``graph_index``: ``(N,)`` graph of every node (default: one graph),
        node order within a graph as given.  ``adjacency``: ``(2, A)`` node pairs ``(i, j)``
        meaning "``j`` is a neighbour of ``i``" (the sparse ``adj_mat``).  ``edge_index`` /
        ``edge_attr``: the sparse ``edges`` argument: pairs ``(i, j)`` and their edge-token ids
        ``(P,)`` or features ``(P, edge_dim)``; pairs not listed get token 0 / zero features.
        Returns ``(N, ...)`` outputs, equal to ``forward`` on the padded equivalent.
        """
        n_nodes = coors.shape[0]
        if coors.ndim != 2 or coors.shape[-1] != 3:
            raise ValueError(f"coors must have shape (nodes, 3) in forward_packed, got {tuple(coors.shape)}")
        if graph_index is None:
            graph_index = torch.zeros(n_nodes, dtype=torch.long, device=coors.device)
        if graph_index.shape != (n_nodes,):
            raise ValueError(f"graph_index must have shape ({n_nodes},), got {tuple(graph_index.shape)}")
        node_ids, b, n = padded_slots(graph_index)
        size = b * n
        mask = torch.zeros(size, dtype=torch.bool, device=coors.device).index_fill(0, node_ids, True).view(b, n)
        padded_coors = coors.new_zeros(size, 3).index_copy(0, node_ids, coors).view(b, n, 3)
        feats = dict(inputs) if isinstance(inputs, dict) else {0: inputs}
        padded = {}
        for l, t in feats.items():
            padded[l] = t.new_zeros(size, *t.shape[1:]).index_copy(0, node_ids, t).view(b, n, *t.shape[1:])
        feats = self._input_features(padded if isinstance(inputs, dict) else padded[0], b, n)
        x = self._pack_features(feats, node_ids, size)
        needs_adjacency = self.attend_sparse_neighbors or self.num_adj_degrees_embed
        pairs = None
        if needs_adjacency:
            if adjacency is None:
                raise ValueError("adjacency (2, A) is required with attend_sparse_neighbors or num_adj_degrees_embed")
            pairs = sparse_pairs(adjacency, node_ids, graph_index)
        edge_lookup = None
        if edge_index is not None:
            edge_lookup = sparse_edge_lookup(edge_index, edge_attr, node_ids, graph_index, size)
        x = self._run(x, padded_coors, mask, node_ids, pairs, edge_lookup)
        out = {}
        fiber = (1,) * self.num_degrees if self.head is not None else self.dim
        for l, t in enumerate(layout(fiber).split(x)):  # (N, 2l+1, C)
            t = t.transpose(-1, -2)
            if l == 0:
                t = t[..., 0]
            if self.reduce_dim_out:
                t = t.squeeze(-1) if l == 0 else t.squeeze(-2)
            out[l] = t
        return Return(out)

    def _pack_features(self, feats: dict[int, Tensor], node_ids: Tensor, size: int) -> Tensor:
        """Padded per-degree inputs -> flat ``(N, F_in)`` features of the real nodes."""
        parts = [feats[0].reshape(size, -1).index_select(0, node_ids)]  # (N, d0)
        for l in range(1, self.input_degrees):
            parts.append(feats[l].transpose(-1, -2).reshape(size, -1).index_select(0, node_ids))  # (N, (2l+1) d_l)
        return torch.cat(parts, dim=-1)

    def _run(self, x: Tensor, coors: Tensor, mask: Tensor, node_ids: Tensor, adjacency, edge_lookup) -> Tensor:
        """The network on packed nodes; neighbour search on the padded coordinates."""
        b, n, _ = coors.shape
        graph = build_graph(
            coors,
            mask,
            num_neighbors=self.num_neighbors,
            valid_radius=self.valid_radius,
            adjacency=adjacency,
            max_hops=self.num_adj_degrees_embed,
            max_sparse_neighbors=self.max_sparse_neighbors,
            adjacency_edges=self.attend_sparse_neighbors,
        )
        lookup = torch.full((b * n,), -1, dtype=torch.long, device=coors.device)
        lookup[node_ids] = torch.arange(node_ids.numel(), device=coors.device)
        pos = coors.reshape(b * n, 3).index_select(0, node_ids)
        dst, src = lookup[graph.dst], lookup[graph.src]
        vec, dist = edge_vectors(pos, dst, src)
        weight = torch.where(graph.by_distance, polynomial_envelope(dist, self.valid_radius), torch.ones_like(dist))
        geometry = EdgeGeometry.build(
            vec,
            dst,
            src,
            num_nodes=node_ids.numel(),
            node_graph=node_ids // n,
            num_graphs=b,
            weight=weight,
            edge_attr=self.radial_trunk(self._edge_scalars(dist, graph, edge_lookup)),
            lmax=self.num_degrees - 1,
            tensor_product=self.tensor_product,
        )
        x = x.to(pos.dtype)
        x = self.input_embedding(x, geometry)
        x = self.blocks(x, geometry)
        x = self.norm(x)
        return self.head(x) if self.head is not None else x

    def _unpack(self, x: Tensor, node_ids: Tensor, mask: Tensor, pooled: bool) -> dict[int, Tensor]:
        b, n = mask.shape
        fiber = (1,) * self.num_degrees if self.head is not None else self.dim
        out = {}
        for l, t in enumerate(layout(fiber).split(x)):  # (N, 2l+1, C_l)
            padded = t.new_zeros(b * n, *t.shape[1:]).index_copy(0, node_ids, t)
            padded = padded.view(b, n, 2 * l + 1, -1).transpose(-1, -2)  # (b, n, C, 2l+1)
            if pooled:
                counts = mask.sum(1).clamp(min=1).to(t.dtype)
                padded = padded.sum(1) / counts.view(b, *([1] * (padded.ndim - 2)))
            if l == 0:
                padded = padded[..., 0]
            if self.reduce_dim_out:
                padded = padded.squeeze(-1) if l == 0 else padded.squeeze(-2)
            out[l] = padded
        return out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["Equiformer", "Return", "count_parameters"]
