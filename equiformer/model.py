"""Equiformer: embeddings -> equivariant attention blocks -> heads.

The keyword names follow ``equiformer-pytorch`` so that switching is a one-line import change.
Internally the padded batch is packed into a flat list of real nodes and an edge list, so padding
never enters the computation and no ``n x n`` feature tensor is made.
"""
from __future__ import annotations

from collections import namedtuple
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .config import EquiformerConfig
from .graph import INF, Graph, adjacency_pairs, build_graph, positions_in_graphs
from .nn.attention import L2DistanceAttention, MLPAttention
from .nn.edge_geometry import EdgeGeometry, edge_vectors
from .nn.edge_layout import EdgeLayout
from .nn.feedforward import FeedForward
from .nn.fiber import as_fiber, layout
from .nn.input_embedding import InputEmbedding
from .nn.linear import EquivariantLinear
from .nn.norm import EquivariantLayerNorm
from .nn.radial import GaussianBasis, RadialTrunk, polynomial_envelope
from .nn.reversible import Block, BlockSequence
from .nn.scatter import segment_sum
from .transforms import check_distance_search_under_transforms, functorch_transform_active
from .packing import checked_neighbors, sparse_edge_lookup, sparse_pairs
from .validation import check_features, check_forward, check_packed, check_packed_edges, warn_unused_adjacency

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
    backward pass: activation memory bounded for very large graphs, for some more compute; see
    ``benchmarks/RESULTS.md``), ``check_inputs`` (default True: ``forward`` also checks values,
    finite coordinates and ids in range, at the cost of a host sync; the attribute of the same
    name switches it at any time), ``smooth_cutoff`` (default False, for the numbers of earlier
    checkpoints: the norms divide degree l > 0 features by ``sqrt(mean square + 1)`` instead of
    ``sqrt(mean square + 1e-6)``, so they never amplify: inputs from neighbours near
    ``valid_radius`` fade with the envelope and outputs are smooth (C2) across the cutoff;
    potentials turn it on), ``mmax`` (default None, every order: with ``tensor_product="so2"``
    the edge frames keep orders ``|m| <= mmax`` only, as eSCN and EquiformerV2 do; exactly
    equivariant, and the cost of an edge layer then grows about as ``L^2 mmax`` instead of
    ``L^3``).  The arguments are checked, and kept, as an
    ``EquiformerConfig`` (``equiformer.config``): ``model.config`` is that frozen object,
    ``model.config.to_dict()`` its plain-dict form for checkpoints, and ``Equiformer.from_config``
    rebuilds a model from either (or from a dict saved by an earlier version).
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
        smooth_cutoff: bool = False,
        mmax: int | None = None,
    ):
        # the settings are checked (and warned about) by EquiformerConfig, the one owner of them;
        # the body reads them from it in their plain form, never the arguments as given
        c = EquiformerConfig(**{k: v for k, v in locals().items() if k not in ("self", "__class__")})
        super().__init__()
        self._config = c
        self.check_inputs = c.check_inputs  # value checks of forward inputs (a host sync); see validation

        self.dim = as_fiber(c.dim, c.num_degrees, "dim")
        self.num_degrees = c.num_degrees
        heads = as_fiber(c.heads, c.num_degrees, "heads")
        dim_head = as_fiber(c.dim_head, c.num_degrees, "dim_head")
        self.dim_in = as_fiber(c.dim_in if c.dim_in is not None else self.dim[: c.input_degrees], c.input_degrees, "dim_in")
        self.input_degrees = c.input_degrees
        self.num_tokens, self.num_positions = c.num_tokens, c.num_positions
        self.valid_radius, self.num_neighbors = float(c.valid_radius), c.num_neighbors
        self.attend_sparse_neighbors = c.attend_sparse_neighbors
        self.num_adj_degrees_embed, self.max_sparse_neighbors = c.num_adj_degrees_embed, c.max_sparse_neighbors
        self.embedding_grad_frac = c.embedding_grad_frac
        self.tensor_product, self.reflection_equivariance = c.tensor_product, c.reflection_equivariance
        self.reduce_dim_out = c.reduce_dim_out
        self.edge_chunk_size = c.edge_chunk_size
        self._needs_adjacency = bool(c.attend_sparse_neighbors or c.num_adj_degrees_embed)

        self.token_emb = nn.Embedding(c.num_tokens, self.dim_in[0]) if c.num_tokens else None
        self.pos_emb = nn.Embedding(c.num_positions, self.dim_in[0]) if c.num_positions else None
        for emb in (self.token_emb, self.pos_emb):
            if emb is not None:
                nn.init.normal_(emb.weight, std=1e-2)

        # invariant edge scalars: distance basis | edge tokens or features | hop distance
        radial_max_distance = c.radial_max_distance if c.radial_max_distance is not None else min(self.valid_radius, 20.0)
        self.distance_basis = GaussianBasis(c.num_radial_basis, radial_max_distance)
        self.edge_dim = c.edge_dim or 0
        self.edge_emb = nn.Embedding(c.num_edge_tokens, c.edge_dim) if c.num_edge_tokens else None
        hops = c.num_adj_degrees_embed
        hop_classes = (hops or 0) + 1
        self.hop_emb = nn.Embedding(hop_classes, c.adj_dim) if hops and c.adj_dim > 0 else None
        hop_dim = (c.adj_dim if self.hop_emb is not None else hop_classes) if hops else 0
        self.radial_trunk = RadialTrunk(c.num_radial_basis + self.edge_dim + hop_dim, c.radial_hidden_dim)

        # one layout object for every edge layer and the geometry: the tensor product decides it once
        self.edge_layout = EdgeLayout.for_tensor_product(c.tensor_product, c.reflection_equivariance, c.mmax, c.num_degrees - 1)
        self.input_embedding = InputEmbedding(self.dim_in, self.dim, c.radial_hidden_dim, edge_layout=self.edge_layout)
        attention_class = L2DistanceAttention if c.l2_dist_attention else MLPAttention
        extra = {} if c.l2_dist_attention else dict(
            attn_hidden_dim_mult=c.attn_hidden_dim_mult, attn_leakyrelu_slope=c.attn_leakyrelu_slope
        )
        blocks = [
            Block(
                attention_class(
                    self.dim,
                    heads,
                    dim_head,
                    c.radial_hidden_dim,
                    attend_self=c.attend_self,
                    single_headed_kv=c.single_headed_kv,
                    gate_attn_head_outputs=c.gate_attn_head_outputs,
                    num_linear_attn_heads=c.num_linear_attn_heads,
                    linear_attn_dim_head=c.linear_attn_dim_head,
                    init_out_zero=c.init_out_zero,
                    edge_layout=self.edge_layout,
                    smooth_norm=c.smooth_cutoff,
                    **extra,
                ),
                FeedForward(self.dim, mult=c.ff_mult, include_htype_norms=c.ff_include_htype_norms, smooth_norm=c.smooth_cutoff),
            )
            for _ in range(c.depth)
        ]
        self.blocks = BlockSequence(blocks, reversible=c.reversible)
        self.norm = EquivariantLayerNorm(self.dim, smooth=c.smooth_cutoff)
        out_fiber = (1,) * c.num_degrees
        if not c.reduce_dim_out:
            self.head = None
        elif c.linear_out:
            self.head = EquivariantLinear(self.dim, out_fiber)
        else:
            self.head = FeedForward(self.dim, out_fiber, mult=c.ff_mult, zero_init_out=False, smooth_norm=c.smooth_cutoff)
        # constants are built on the CPU on purpose; the model as a whole lives where torch.nn puts
        # parameters, on the default device (``with torch.device("cuda"): Equiformer(...)``)
        self.to(torch.get_default_device())

    @property
    def device(self) -> torch.device:
        """Where the parameters are (as ``equiformer_pytorch.Equiformer.device``)."""
        return next(self.parameters()).device

    @property
    def config(self) -> EquiformerConfig:
        """The constructor settings, all of them, checked and frozen (so shared, not copied).
        Save ``model.config.to_dict()`` next to the ``state_dict`` (it loads with
        ``torch.load(weights_only=True)``) and rebuild the model with ``Equiformer.from_config``."""
        return self._config

    @classmethod
    def from_config(cls, config: EquiformerConfig | Mapping[str, Any]) -> "Equiformer":
        """A new model (fresh weights) with these settings: an ``EquiformerConfig``, or a plain
        dict as ``to_dict`` writes it or as earlier versions saved ``model.config`` (unknown
        keys are a ``TypeError`` naming them; missing ones take their defaults)."""
        if not isinstance(config, EquiformerConfig):
            config = EquiformerConfig.from_dict(config)
        return cls(**config.to_dict())

    # ------------------------------------------------------------------ inputs
    def _embed_inputs(self, feats: dict[int, Tensor], positions: Tensor) -> dict[int, Tensor]:
        """Checked per-degree inputs of the real nodes (see ``check_features``) ->
        ``{0: (N, d0), l: (N, d_l, 2l+1)}``: token ids embedded, ``positions`` ``(N,)`` (each
        node's index within its graph) embedded for ``num_positions``."""
        feats = dict(feats)
        x0 = feats[0]
        if self.token_emb is not None:
            x0 = self.token_emb(x0.long())  # any integer dtype (embedding takes int32/int64 only)
        elif x0.ndim == 3:
            x0 = x0[..., 0]  # (N, d0, 1) -> (N, d0)
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
        """The padded API of equiformer-pytorch: ``inputs`` ``(b, n, ...)``, ``coors`` ``(b, n, 3)``.

        An adapter over the packed network: the real nodes are packed (padding is never read),
        run as ``forward_packed`` runs them, and their outputs put back in their padded slots
        (zeros at padded nodes)."""
        check_forward(self, coors, mask, adj_mat, edges)
        b, n, _ = coors.shape
        if mask is None:
            mask = torch.ones(b, n, dtype=torch.bool, device=coors.device)
        check_features(self, inputs, (b, n), "batch, nodes", largest_graph=n, mask=mask)
        node_ids = mask.reshape(-1).nonzero().flatten()  # (N,) padded-flat ids b*n+i of the real nodes
        feats = {l: t.reshape(b * n, *t.shape[2:]).index_select(0, node_ids) for l, t in _degree_dict(inputs).items()}
        adjacency = None
        if adj_mat is not None and self._needs_adjacency:
            adj_mat = adj_mat[None].expand(b, n, n) if adj_mat.ndim == 2 else adj_mat
            to_packed = torch.full((b * n,), -1, dtype=torch.long, device=coors.device)
            to_packed[node_ids] = torch.arange(node_ids.numel(), device=coors.device)
            adjacency = tuple(to_packed[ids] for ids in adjacency_pairs(adj_mat, mask))  # real nodes only
        edge_lookup = None
        if edges is not None:
            flat_edges = edges.reshape(b * n, n, *edges.shape[3:])
            edge_lookup = lambda dst, src: flat_edges[node_ids[dst], node_ids[src] % n]  # noqa: E731
        graph_index = node_ids // n
        x = self._packed_network(
            feats, coors.reshape(b * n, 3).index_select(0, node_ids), graph_index, node_ids % n, b, adjacency, edge_lookup
        )
        if return_pooled:
            return Return({l: self._public_shape(t.transpose(-1, -2), l) for l, t in enumerate(self._degrees(self._pool(x, graph_index, b)))})
        out = {}
        for l, t in enumerate(self._degrees(x)):  # (N, 2l+1, C_l)
            padded = t.new_zeros(b * n, *t.shape[1:]).index_copy(0, node_ids, t)
            out[l] = self._public_shape(padded.view(b, n, 2 * l + 1, t.shape[-1]).transpose(-1, -2), l)  # (b, n, C, 2l+1)
        return Return(out)

    def forward_packed(
        self,
        inputs: Tensor | dict,
        coors: Tensor,
        graph_index: Tensor | None = None,
        adjacency: Tensor | None = None,
        edge_index: Tensor | None = None,
        edge_attr: Tensor | None = None,
        return_pooled: bool = False,
        *,
        neighbors: Tensor | None = None,
        shifts: Tensor | None = None,
    ) -> Return:
        """Many graphs of different sizes in one call, without padding: the model itself.

        ``inputs``: token ids ``(N,)``, features ``(N, d0)``, or ``{0: (N, d0), l: (N, d_l, 2l+1)}``;
        ``coors``: ``(N, 3)``; ``graph_index``: ``(N,)`` graph of every node (default: one graph),
        node order within a graph as given (``num_positions`` embeds a node's rank among its
        graph's nodes; padded ``forward`` embeds its padded index, the same unless the mask has
        holes).  ``adjacency``: ``(2, A)`` node pairs ``(i, j)`` meaning "``j`` is a neighbour of
        ``i``" (the sparse ``adj_mat``: a pair listed twice counts once).  ``edge_index`` /
        ``edge_attr``: the sparse ``edges`` argument: pairs ``(i, j)`` (each at most once) and
        their edge-token ids ``(P,)`` or features ``(P, edge_dim)``; pairs not listed get token 0
        / zero features.  Ids may have any integer dtype.

        ``neighbors``: a graph from outside, ``(2, E)`` pairs ``(i, j)``, "``i`` receives from
        ``j``" (a PyG ``edge_index`` is ``(source, target)``: flip it).  No neighbour search runs;
        the edge vector of edge ``e`` is ``coors[j] - coors[i] + shifts[e]``, ``shifts`` ``(E, 3)``
        (optional, same dtype as ``coors``) carrying periodic images: gradients flow through both.
        Edges still fade out at ``valid_radius`` by their length; adjacency edges, hop labels and
        edge tokens apply by node pair alongside (a listed pair with no shift that is also a kept
        adjacency pair counts once, as the adjacency edge).  A pair may repeat with different
        shifts (images); a node's edge to itself needs a nonzero shift.

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
        pairs = None
        if adjacency is not None and not self._needs_adjacency:
            warn_unused_adjacency("adjacency", stacklevel=2)
        if self._needs_adjacency:
            if adjacency is None:
                raise ValueError("adjacency (2, A) is required with attend_sparse_neighbors or num_adj_degrees_embed")
            pairs = sparse_pairs(adjacency, graph_index)
        check_packed_edges(self, edge_index, edge_attr)
        edge_lookup = None
        if edge_index is not None:
            edge_lookup = sparse_edge_lookup(edge_index, edge_attr, graph_index)
        given = None
        if neighbors is not None or shifts is not None:
            given = checked_neighbors(neighbors, shifts, coors, graph_index, check_values=self.check_inputs)
        x = self._packed_network(_degree_dict(inputs), coors, graph_index, positions, num_graphs, pairs, edge_lookup, given)
        if return_pooled:
            x = self._pool(x, graph_index, num_graphs)
        return Return({l: self._public_shape(t.transpose(-1, -2), l) for l, t in enumerate(self._degrees(x))})

    def _packed_network(
        self,
        feats: dict[int, Tensor],
        coors: Tensor,
        graph_index: Tensor,
        positions: Tensor,
        num_graphs: int,
        adjacency: tuple[Tensor, Tensor] | None,
        edge_lookup,
        neighbors: tuple[Tensor, Tensor | None] | None = None,
    ) -> Tensor:
        """The network on packed nodes: per-degree inputs ``(N, ...)`` at ``coors`` ``(N, 3)`` ->
        flat outputs ``(N, F_out)``.  ``positions``: the index ``num_positions`` embeds;
        ``adjacency``: ``(dst, src)`` pairs; ``edge_lookup(dst, src)``: edge tokens or features of
        node pairs; ``neighbors``: checked ``(pairs (2, E), shifts (E, 3) or None)`` from outside."""
        x = self._pack_features(self._embed_inputs(feats, positions))  # (N, F_in)
        if neighbors is None and self.num_neighbors > 0:
            check_distance_search_under_transforms()
        graph = self._graph(coors, graph_index, adjacency, neighbors)
        # per-graph work inside the network (global linear attention) over the graphs that have
        # nodes, numbered densely: sparse ids (1e6 for two graphs) would size it by the largest id
        node_graph = graph_index
        present = torch.bincount(graph_index, minlength=num_graphs) > 0
        if graph_index.numel() and not bool(present.all()):
            node_graph, num_graphs = (torch.cumsum(present, 0) - 1)[graph_index], int(present.sum())
        return self._run(x, coors, graph, node_graph, num_graphs, edge_lookup)

    @staticmethod
    def _pool(x: Tensor, graph_index: Tensor, num_graphs: int) -> Tensor:
        """Per-graph means of flat node outputs, ``(N, F) -> (graphs, F)``; graphs without nodes
        get zeros."""
        sizes = torch.bincount(graph_index, minlength=num_graphs).clamp(min=1)  # (graphs,)
        return segment_sum(x, graph_index, num_graphs) / sizes.to(x.dtype)[:, None]

    def _radial(self, scalars: Tensor) -> Tensor:
        """Shared radial trunk; recomputed in backward instead of stored when chunking edges."""
        chunked = self.edge_chunk_size is not None and scalars.shape[0] > self.edge_chunk_size
        if chunked and not functorch_transform_active():  # torch.func has no saved-tensor hooks
            return checkpoint(self.radial_trunk, scalars, use_reentrant=False)
        return self.radial_trunk(scalars)

    def _pack_features(self, feats: dict[int, Tensor]) -> Tensor:
        """Per-degree node inputs ``{0: (N, d0), l: (N, d_l, 2l+1)}`` -> flat ``(N, F_in)``."""
        parts = [feats[0]]  # (N, d0)
        for l in range(1, self.input_degrees):
            t = feats[l].transpose(-1, -2)  # (N, 2l+1, d_l)
            parts.append(t.reshape(t.shape[0], t.shape[-2] * t.shape[-1]))  # (N, (2l+1) d_l)
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]

    def _graph(
        self, coors: Tensor, graph_index: Tensor, adjacency: tuple[Tensor, Tensor] | None, neighbors: tuple[Tensor, Tensor | None] | None
    ) -> Graph:
        """Edges by the model's settings over packed nodes: found by distance, or ``neighbors``
        from outside, plus ``adjacency`` pairs and hop labels."""
        return build_graph(
            coors,
            None,
            num_neighbors=self.num_neighbors,
            valid_radius=self.valid_radius,
            max_hops=self.num_adj_degrees_embed,
            max_sparse_neighbors=self.max_sparse_neighbors,
            adjacency_edges=self.attend_sparse_neighbors,
            adjacency=adjacency,
            graph_index=graph_index,
            neighbors=neighbors,
        )

    def _run(self, x: Tensor, pos: Tensor, graph: Graph, node_graph: Tensor, num_graphs: int, edge_lookup) -> Tensor:
        """The layers on packed nodes ``x`` ``(N, F_in)`` at ``pos`` ``(N, 3)`` over ``graph``."""
        dst, src = graph.dst, graph.src
        vec, dist = edge_vectors(pos, dst, src, graph.shift)
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
            edge_layout=self.edge_layout,
            edge_chunk_size=self.edge_chunk_size,
        )
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


def _degree_dict(inputs: Tensor | dict) -> dict[int, Tensor]:
    """``forward``'s inputs as per-degree tensors (a tensor is degree 0)."""
    return dict(inputs) if isinstance(inputs, dict) else {0: inputs}


__all__ = ["Equiformer", "Return"]
