"""Equiformer: embeddings -> equivariant attention blocks -> heads.

The keyword names follow ``equiformer-pytorch`` so that switching is a one-line import change.
Internally the padded batch is packed into a flat list of real nodes and an edge list, so padding
never enters the computation and no ``n x n`` feature tensor is made.
"""
from __future__ import annotations

import copy
from collections import namedtuple
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .graph import INF, Graph, adjacency_pairs, build_graph, positions_in_graphs
from .nn.attention import L2DistanceAttention, MLPAttention
from .nn.edge_geometry import EdgeGeometry, edge_vectors
from .nn.feedforward import FeedForward
from .nn.fiber import as_fiber, layout
from .nn.input_embedding import InputEmbedding
from .nn.linear import EquivariantLinear
from .nn.norm import EquivariantLayerNorm
from .nn.radial import GaussianBasis, RadialTrunk, polynomial_envelope
from .nn.reversible import Block, BlockSequence
from .nn.scatter import segment_sum
from .nn.transforms import check_distance_search_under_transforms, functorch_transform_active
from .packing import sparse_edge_lookup, sparse_pairs
from .validation import check_config, plain_config, check_features, check_forward, check_packed, check_packed_edges, warn_unused_adjacency

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
        # only degrees the model has (``type1`` is a field: None for a model of degree 0 only);
        # ``type01`` or ``type9`` of a degree-2 model are errors, not another degree or None
        digits = name[4:]
        if name.startswith("type") and digits.isdigit() and digits == str(int(digits)):
            degrees = self.__dict__.get("degrees", {})
            if int(digits) in degrees:
                return degrees[int(digits)]
        raise AttributeError(f"'Return' has no attribute {name!r}")

    def _replace(self, **changes: Tensor | None) -> "Return":
        """A copy with ``type0`` / ``type1`` replaced (the namedtuple method, keeping ``degrees``)."""
        unknown = set(changes) - set(self._fields)
        if unknown:
            raise ValueError(f"Return._replace got unexpected field names: {sorted(unknown)}")
        degrees = dict(self.degrees)
        for name, value in changes.items():
            degrees[int(name[4:])] = value
        return Return(degrees)


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
    ``attn_leakyrelu_slope``, ``init_out_zero``; ``splits`` is accepted and ignored (it tuned a memory trade-off
    that this implementation does not need).

    New: ``tensor_product`` (``"so2"`` fast path, ``"cg"`` Clebsch-Gordan reference),
    ``reflection_equivariance`` (E(3): degree-l features have parity ``(-1)^l``), ``ff_mult``,
    ``num_radial_basis`` and ``radial_max_distance`` (Gaussian distance basis on
    ``[0, radial_max_distance]``, default ``min(valid_radius, 20)``), ``edge_chunk_size``
    (process edges in chunks of at most this many, whole receivers each, recomputing them in the
    backward pass: activation memory bounded for very large graphs; forward+backward took 1.26x
    the unchunked time with chunks of 32,768 edges at 16,000 nodes, more with smaller chunks, see
    ``benchmarks/RESULTS.md``), ``check_inputs`` (default True: ``forward`` also checks values,
    finite coordinates and ids in range, at the cost of a host sync; the attribute of the same
    name switches it at any time).  Arguments are checked
    by ``equiformer.validation``; ``model.config`` and ``Equiformer.from_config`` round-trip them.
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
        init_out_zero: bool = True,
        ff_mult: int = 4,
        tensor_product: str = "so2",
        reflection_equivariance: bool = False,
        num_radial_basis: int = 16,
        radial_max_distance: float | None = None,
        edge_chunk_size: int | None = None,
        check_inputs: bool = True,
    ):
        config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        check_config(config)
        super().__init__()
        self._config = plain_config(config)  # a private copy in plain Python types
        self.check_inputs = check_inputs  # value checks of forward inputs (a host sync); see validation

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
        self.edge_chunk_size = edge_chunk_size

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
                    init_out_zero=init_out_zero,
                    **conv,
                    **extra,
                ),
                FeedForward(self.dim, mult=ff_mult, include_htype_norms=ff_include_htype_norms),
            )
            for _ in range(depth)
        ]
        self.blocks = BlockSequence(blocks, reversible=reversible)
        self.norm = EquivariantLayerNorm(self.dim)
        out_fiber = (1,) * num_degrees
        if not reduce_dim_out:
            self.head = None
        elif linear_out:
            self.head = EquivariantLinear(self.dim, out_fiber)
        else:
            self.head = FeedForward(self.dim, out_fiber, mult=ff_mult, zero_init_out=False)

    @property
    def device(self) -> torch.device:
        """Where the parameters are (as ``equiformer_pytorch.Equiformer.device``)."""
        return next(self.parameters()).device

    @property
    def config(self) -> dict:
        """The constructor keywords, all of them, as a plain dict: save it next to the
        ``state_dict`` (it loads with ``torch.load(weights_only=True)``) and rebuild the model
        with ``Equiformer.from_config``."""
        return copy.deepcopy(self._config)

    @classmethod
    def from_config(cls, config: dict) -> "Equiformer":
        return cls(**config)

    # ------------------------------------------------------------------ inputs
    def _embed_inputs(
        self, inputs: Tensor | dict, positions: Tensor, node_dims: int, mask: Tensor | None = None
    ) -> dict[int, Tensor]:
        """Checked inputs (see ``check_features``) with ``node_dims`` leading node dimensions
        (2: ``(b, n)`` padded, 1: ``(N,)`` packed) -> ``{0: (*nodes, d0), l: (*nodes, d_l, 2l+1)}``.
        ``positions``: every node's index within its graph (for ``num_positions``), broadcastable
        to the node dimensions."""
        feats = dict(inputs) if isinstance(inputs, dict) else {0: inputs}
        x0 = feats[0]
        if self.token_emb is not None:
            x0 = x0.long()  # any integer dtype (embedding takes int32/int64 only)
            if mask is not None:
                x0 = x0.masked_fill(~mask, 0)  # padding may hold any id (-1...): never read
            x0 = self.token_emb(x0)
        elif x0.ndim == node_dims + 2:
            x0 = x0[..., 0]  # (..., d0, 1) -> (..., d0)
        if self.pos_emb is not None:
            x0 = x0 + self.pos_emb(positions)
        frac = self.embedding_grad_frac
        feats[0] = frac * x0 + (1 - frac) * x0.detach()
        return feats

    def _edge_scalars(self, dist: Tensor, graph, edge_lookup) -> Tensor:
        parts = [self.distance_basis(dist)]  # (E, K)
        if self.edge_dim:
            if edge_lookup is None:
                raise ValueError("this model has edge embeddings (edge_dim): pass edges=(b, n, n) ids or (b, n, n, edge_dim) features")
            picked = edge_lookup(graph.dst, graph.src)  # (E,) ids or (E, edge_dim)
            parts.append(self.edge_emb(picked.long()) if self.edge_emb is not None else picked.to(dist.dtype))
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
        check_forward(self, coors, mask, adj_mat, edges)
        b, n, _ = coors.shape
        if mask is None:
            mask = torch.ones(b, n, dtype=torch.bool, device=coors.device)
        check_features(self, inputs, (b, n), "batch, nodes", largest_graph=n, mask=mask)
        feats = self._embed_inputs(inputs, torch.arange(n, device=coors.device), node_dims=2, mask=mask)
        if adj_mat is not None and adj_mat.ndim == 2:
            adj_mat = adj_mat[None].expand(b, n, n)
        needs_adjacency = self.attend_sparse_neighbors or self.num_adj_degrees_embed

        node_ids = mask.reshape(-1).nonzero().flatten()  # padded-flat ids of real nodes
        x = self._pack_features(feats, b * n, node_ids)
        edge_lookup = None
        if edges is not None:
            flat_edges = edges.reshape(b * n, n, *edges.shape[3:])
            edge_lookup = lambda dst, src: flat_edges[dst, src % n]  # noqa: E731
        graph = self._graph(coors, mask=mask, adjacency=adjacency_pairs(adj_mat, mask) if needs_adjacency else None)
        to_packed = torch.full((b * n,), -1, dtype=torch.long, device=coors.device)
        to_packed[node_ids] = torch.arange(node_ids.numel(), device=coors.device)
        pos = coors.reshape(b * n, 3).index_select(0, node_ids)
        x = self._run(x, pos, graph, to_packed, node_ids // n, b, edge_lookup)
        return Return(self._unpack(x, node_ids, mask, return_pooled))

    def forward_packed(
        self,
        inputs: Tensor | dict,
        coors: Tensor,
        graph_index: Tensor | None = None,
        adjacency: Tensor | None = None,
        edge_index: Tensor | None = None,
        edge_attr: Tensor | None = None,
        return_pooled: bool = False,
    ) -> Return:
        """Many graphs of different sizes in one call, without padding.

        ``inputs``: token ids ``(N,)``, features ``(N, d0)``, or ``{0: (N, d0), l: (N, d_l, 2l+1)}``;
        ``coors``: ``(N, 3)``; ``graph_index``: ``(N,)`` graph of every node (default: one graph),
        node order within a graph as given (``num_positions`` embeds a node's rank among its
        graph's nodes; padded ``forward`` embeds its padded index, the same unless the mask has
        holes).  ``adjacency``: ``(2, A)`` node pairs ``(i, j)`` meaning "``j`` is a neighbour of
        ``i``" (the sparse ``adj_mat``: a pair listed twice counts once).  ``edge_index`` /
        ``edge_attr``: the sparse ``edges`` argument: pairs ``(i, j)`` (each at most once) and
        their edge-token ids ``(P,)`` or features ``(P, edge_dim)``; pairs not listed get token 0
        / zero features.  Ids may have any integer dtype.
        Returns ``(N, ...)`` outputs, equal to ``forward`` on the padded equivalent, or with
        ``return_pooled`` the mean over each graph's nodes, ``(number of graphs, ...)`` (graph ids
        without nodes get zeros).  Nothing is padded: memory is linear in N whatever the mix of
        graph sizes.
        """
        check_packed(self, coors, graph_index)
        n_nodes = coors.shape[0]
        one_graph = graph_index is None  # one graph, even without nodes
        if one_graph:
            graph_index = torch.zeros(n_nodes, dtype=torch.long, device=coors.device)
        graph_index = graph_index.long()  # any integer dtype; indexing needs int64
        counts, positions = positions_in_graphs(graph_index)  # nodes per graph, position in it
        num_graphs = 1 if one_graph else counts.numel()
        check_features(self, inputs, (n_nodes,), "nodes", largest_graph=int(counts.max()) if n_nodes else 0)
        x = self._pack_features(self._embed_inputs(inputs, positions, node_dims=1), n_nodes)
        needs_adjacency = self.attend_sparse_neighbors or self.num_adj_degrees_embed
        pairs = None
        if adjacency is not None and not needs_adjacency:
            warn_unused_adjacency("adjacency", stacklevel=2)
        if needs_adjacency:
            if adjacency is None:
                raise ValueError("adjacency (2, A) is required with attend_sparse_neighbors or num_adj_degrees_embed")
            pairs = sparse_pairs(adjacency, graph_index)
        check_packed_edges(self, edge_index, edge_attr)
        edge_lookup = None
        if edge_index is not None:
            edge_lookup = sparse_edge_lookup(edge_index, edge_attr, graph_index)
        graph = self._graph(coors, graph_index=graph_index, adjacency=pairs)
        # per-graph work inside the network (global linear attention) over the graphs that have
        # nodes, numbered densely: sparse ids (1e6 for two graphs) would size it by the largest id
        node_graph, run_graphs = graph_index, num_graphs
        present = counts > 0
        if not one_graph and n_nodes and not bool(present.all()):
            node_graph, run_graphs = (torch.cumsum(present, 0) - 1)[graph_index], int(present.sum())
        x = self._run(x, coors, graph, None, node_graph, run_graphs, edge_lookup)
        if return_pooled:  # per-graph means of the flat outputs (N, F) -> (graphs, F)
            sizes = counts.clamp(min=1) if counts.numel() else counts.new_ones(1)  # (graphs,)
            x = segment_sum(x, graph_index, num_graphs) / sizes.to(x.dtype)[:, None]
        return Return({l: self._public_shape(t.transpose(-1, -2), l) for l, t in enumerate(self._degrees(x))})

    def _radial(self, scalars: Tensor) -> Tensor:
        """Shared radial trunk; recomputed in backward instead of stored when chunking edges."""
        chunked = self.edge_chunk_size is not None and scalars.shape[0] > self.edge_chunk_size
        if chunked and not functorch_transform_active():  # torch.func has no saved-tensor hooks
            return checkpoint(self.radial_trunk, scalars, use_reentrant=False)
        return self.radial_trunk(scalars)

    def _pack_features(self, feats: dict[int, Tensor], size: int, node_ids: Tensor | None = None) -> Tensor:
        """Per-degree inputs over ``size`` node slots -> flat ``(N, F_in)`` features of the real
        nodes (the slots ``node_ids``; all of them if None)."""
        parts = [feats[0].reshape(size, feats[0].shape[-1])]  # (slots, d0)
        for l in range(1, self.input_degrees):
            t = feats[l].transpose(-1, -2)  # (..., 2l+1, d_l)
            parts.append(t.reshape(size, t.shape[-2] * t.shape[-1]))  # (slots, (2l+1) d_l)
        if node_ids is not None:
            parts = [part.index_select(0, node_ids) for part in parts]  # (N, ...)
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]

    def _graph(self, coors: Tensor, **nodes) -> Graph:
        """Edges by the model's settings; ``nodes``: ``mask=`` (padded ``coors``) or
        ``graph_index=`` (packed), and ``adjacency=`` pairs in the same node ids."""
        if self.num_neighbors > 0:
            check_distance_search_under_transforms()
        return build_graph(
            coors,
            nodes.pop("mask", None),
            num_neighbors=self.num_neighbors,
            valid_radius=self.valid_radius,
            max_hops=self.num_adj_degrees_embed,
            max_sparse_neighbors=self.max_sparse_neighbors,
            adjacency_edges=self.attend_sparse_neighbors,
            **nodes,
        )

    def _run(
        self, x: Tensor, pos: Tensor, graph: Graph, to_packed: Tensor | None, node_graph: Tensor, num_graphs: int, edge_lookup
    ) -> Tensor:
        """The network on packed nodes ``x`` ``(N, F_in)`` at ``pos`` ``(N, 3)``; ``graph``'s node
        ids map to packed ones through ``to_packed`` (None: they are packed already), while
        ``edge_lookup`` takes them as they are."""
        dst, src = (graph.dst, graph.src) if to_packed is None else (to_packed[graph.dst], to_packed[graph.src])
        vec, dist = edge_vectors(pos, dst, src)
        weight = torch.where(graph.by_distance, polynomial_envelope(dist, self.valid_radius), torch.ones_like(dist))
        geometry = EdgeGeometry.build(
            vec,
            dst,
            src,
            num_nodes=pos.shape[0],
            node_graph=node_graph,
            num_graphs=num_graphs,
            weight=weight,
            edge_attr=self._radial(self._edge_scalars(dist, graph, edge_lookup)),
            lmax=self.num_degrees - 1,
            tensor_product=self.tensor_product,
        )
        geometry.edge_chunk_size = self.edge_chunk_size
        x = x.to(pos.dtype)
        x = self.input_embedding(x, geometry)
        x = self.blocks(x, geometry)
        x = self.norm(x)
        return self.head(x) if self.head is not None else x

    def _degrees(self, x: Tensor) -> list[Tensor]:
        """Flat outputs -> per-degree ``(N, 2l+1, C_l)`` views."""
        return layout((1,) * self.num_degrees if self.head is not None else self.dim).split(x)

    def _public_shape(self, t: Tensor, l: int) -> Tensor:
        """``(..., C, 2l+1)`` -> the shapes equiformer-pytorch returns (type 0 without its
        component axis; one channel squeezed away with ``reduce_dim_out``)."""
        if l == 0:
            t = t[..., 0]
        if self.reduce_dim_out:
            t = t.squeeze(-1) if l == 0 else t.squeeze(-2)
        return t

    def _unpack(self, x: Tensor, node_ids: Tensor, mask: Tensor, pooled: bool) -> dict[int, Tensor]:
        b, n = mask.shape
        out = {}
        for l, t in enumerate(self._degrees(x)):  # (N, 2l+1, C_l)
            padded = t.new_zeros(b * n, *t.shape[1:]).index_copy(0, node_ids, t)
            padded = padded.view(b, n, 2 * l + 1, t.shape[-1]).transpose(-1, -2)  # (b, n, C, 2l+1)
            if pooled:
                counts = mask.sum(1).clamp(min=1).to(t.dtype)
                padded = padded.sum(1) / counts.view(b, *([1] * (padded.ndim - 2)))
            out[l] = self._public_shape(padded, l)
        return out


__all__ = ["Equiformer", "Return"]
