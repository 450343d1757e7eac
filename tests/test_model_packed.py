"""Packed graphs (nodes concatenated with a graph index) give the padded API's results."""
import pytest
import torch

from model_factory import chain_adjacency, make_model


def _padded_and_packed(sizes, n_max, seed=0, dim_in=(5, 3)):
    g = torch.Generator().manual_seed(seed)
    b = len(sizes)
    mask = torch.zeros(b, n_max, dtype=torch.bool)
    for i, s in enumerate(sizes):
        mask[i, :s] = True
    f0 = torch.randn(b, n_max, dim_in[0], dtype=torch.float64, generator=g)
    f1 = torch.randn(b, n_max, dim_in[1], 3, dtype=torch.float64, generator=g)
    coors = torch.randn(b, n_max, 3, dtype=torch.float64, generator=g)
    tokens = torch.randint(1, 3, (b, n_max, n_max), generator=g) * (torch.rand(b, n_max, n_max, generator=g) < 0.3)
    adj = chain_adjacency(n_max)[None].expand(b, n_max, n_max) & mask[:, :, None] & mask[:, None, :]
    return mask, f0, f1, coors, tokens, adj


@pytest.mark.parametrize("attention", ["mlp", "l2"])
def test_packed_equals_padded(attention):
    model = make_model(
        l2_dist_attention=attention == "l2",
        input_degrees=2,
        dim_in=(5, 3),
        num_edge_tokens=3,
        edge_dim=4,
        attend_sparse_neighbors=True,
        num_adj_degrees_embed=2,
        num_linear_attn_heads=1,
    )
    sizes, n_max = [7, 12, 3, 9], 12
    mask, f0, f1, coors, tokens, adj = _padded_and_packed(sizes, n_max)
    padded = model({0: f0, 1: f1}, coors, mask, adj_mat=adj, edges=tokens)

    graph_index = torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes))
    node_b, node_i = mask.nonzero(as_tuple=True)
    # shuffle the node order: packing must not depend on it
    perm = torch.randperm(len(node_b), generator=torch.Generator().manual_seed(3))
    node_b, node_i, graph_index = node_b[perm], node_i[perm], graph_index[perm]
    assert torch.equal(graph_index, node_b)
    packed_id = torch.full((len(sizes), n_max), -1, dtype=torch.long)
    packed_id[node_b, node_i] = torch.arange(len(node_b))
    ab, ai, aj = adj.nonzero(as_tuple=True)
    adjacency = torch.stack([packed_id[ab, ai], packed_id[ab, aj]])
    eb, ei, ej = tokens.nonzero(as_tuple=True)
    eb, ei, ej = eb[mask[eb, ei] & mask[eb, ej]], ei[mask[eb, ei] & mask[eb, ej]], ej[mask[eb, ei] & mask[eb, ej]]
    edge_index = torch.stack([packed_id[eb, ei], packed_id[eb, ej]])
    packed = model.forward_packed(
        {0: f0[node_b, node_i], 1: f1[node_b, node_i]},
        coors[node_b, node_i],
        graph_index,
        adjacency=adjacency,
        edge_index=edge_index,
        edge_attr=tokens[eb, ei, ej],
    )
    for a, p in [(padded.type0, packed.type0), (padded.type1, packed.type1), (padded.type2, packed.type2)]:
        assert (a[node_b, node_i] - p).abs().max() <= 1e-12
    assert packed.type1.shape == (sum(sizes), model.dim[1], 3)


def test_packed_tokens_and_reduce_dim_out():
    torch.manual_seed(0)
    from equiformer import Equiformer
    from equiformer.testing import randomize_parameters

    model = Equiformer(num_tokens=10, dim=8, num_degrees=2, depth=1, heads=2, dim_head=4, reduce_dim_out=True).double()
    randomize_parameters(model, generator=torch.Generator().manual_seed(0))  # attention is an identity at init
    tokens = torch.randint(0, 10, (11,))
    coors = torch.randn(11, 3, dtype=torch.float64)
    graph_index = torch.tensor([0] * 5 + [1] * 6)
    packed = model.forward_packed(tokens, coors, graph_index)
    assert packed.type0.shape == (11,) and packed.type1.shape == (11, 3)
    first = model(tokens[None, :5], coors[None, :5])
    assert (first.type1[0] - packed.type1[:5]).abs().max() <= 1e-12


def test_packed_rejects_pairs_across_graphs():
    model = make_model(attend_sparse_neighbors=True)
    graph_index = torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="adjacency"):
        model.forward_packed(torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64), graph_index, adjacency=torch.tensor([[0], [2]]))


def test_graphs_of_very_different_sizes_packed_equal_each_graph_alone():
    """One large graph with many small ones: the neighbour search runs by size groups (the
    padded search would compare 30 x 40^2 pairs); every graph still gets its own result."""
    from equiformer.graph import size_groups

    model = make_model(attend_sparse_neighbors=True, num_adj_degrees_embed=2)
    sizes = [40] + [1, 2, 3, 5, 8] * 6
    g = torch.Generator().manual_seed(4)
    feats = torch.randn(sum(sizes), 5, dtype=torch.float64, generator=g)
    coors = torch.randn(sum(sizes), 3, dtype=torch.float64, generator=g) * 2
    graph_index = torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes))
    first = torch.cumsum(torch.tensor([0] + sizes[:-1]), 0)
    chain = [(i, i + 1) for start, size in zip(first.tolist(), sizes) for i in range(start, start + size - 1)]
    adjacency = torch.tensor(chain + [(j, i) for i, j in chain]).T
    assert size_groups(torch.tensor(sizes), padded_width=max(sizes)) is not None  # padding would dominate here
    packed = model.forward_packed(feats, coors, graph_index, adjacency=adjacency)
    for b, (start, size) in enumerate(zip(first.tolist(), sizes)):
        own = (adjacency[0] >= start) & (adjacency[0] < start + size)
        alone = model.forward_packed(feats[start : start + size], coors[start : start + size], adjacency=adjacency[:, own] - start)
        assert (alone.type1 - packed.type1[start : start + size]).abs().max() <= 1e-12


def test_packed_call_without_nodes_returns_empty_outputs():
    model = make_model(input_degrees=2, dim_in=(5, 3))
    empty = torch.zeros(0, dtype=torch.long)
    out = model.forward_packed(
        {0: torch.zeros(0, 5, dtype=torch.float64), 1: torch.zeros(0, 3, 3, dtype=torch.float64)},
        torch.zeros(0, 3, dtype=torch.float64),
        empty,
    )
    assert out.type0.shape == (0, model.dim[0]) and out.type1.shape == (0, model.dim[1], 3)


def test_packed_pooled_outputs_equal_the_padded_ones():
    """``return_pooled``: the mean over each graph's nodes, as ``forward(..., return_pooled=True)``
    gives for the padded batch; a graph id without nodes gets zeros."""
    model = make_model()
    sizes, n_max = [7, 12, 3], 12
    g = torch.Generator().manual_seed(6)
    mask = torch.zeros(len(sizes), n_max, dtype=torch.bool)
    for i, size in enumerate(sizes):
        mask[i, :size] = True
    feats = torch.randn(len(sizes), n_max, 5, dtype=torch.float64, generator=g)
    coors = torch.randn(len(sizes), n_max, 3, dtype=torch.float64, generator=g)
    padded = model(feats, coors, mask, return_pooled=True)
    node_b, node_i = mask.nonzero(as_tuple=True)
    graph_index = node_b.clone()
    graph_index[graph_index == 2] = 3  # graph id 2 left without nodes
    packed = model.forward_packed(feats[node_b, node_i], coors[node_b, node_i], graph_index, return_pooled=True)
    assert packed.type0.shape == (4, model.dim[0]) and packed.type1.shape == (4, model.dim[1], 3)
    for a, p in [(padded.type0, packed.type0), (padded.type1, packed.type1)]:
        assert (a[:2] - p[:2]).abs().max() <= 1e-12 and (a[2] - p[3]).abs().max() <= 1e-12
        assert p[2].abs().max() == 0


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_packed_ids_of_any_integer_dtype(dtype):
    """Graph ids, pair lists and token ids in a narrower integer dtype give the int64 results
    (uint8 must not be read as a boolean mask, int32 must not fail inside indexing)."""
    model = make_model(
        num_tokens=6, dim_in=5, num_edge_tokens=3, edge_dim=4, attend_sparse_neighbors=True, num_adj_degrees_embed=2, adj_dim=0
    )
    g = torch.Generator().manual_seed(7)
    tokens = torch.randint(0, 6, (9,), generator=g)
    coors = torch.randn(9, 3, dtype=torch.float64, generator=g)
    graph_index = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1])
    adjacency = torch.tensor([[0, 1, 2, 4, 5, 6, 7], [1, 2, 3, 5, 6, 7, 8]])
    adjacency = torch.cat([adjacency, adjacency.flip(0)], 1)
    edge_index, edge_attr = torch.tensor([[0, 5, 8], [1, 6, 4]]), torch.tensor([1, 2, 1])
    reference = model.forward_packed(tokens, coors, graph_index, adjacency=adjacency, edge_index=edge_index, edge_attr=edge_attr)
    narrow = model.forward_packed(
        tokens.to(dtype),
        coors,
        graph_index.to(dtype),
        adjacency=adjacency.to(dtype),
        edge_index=edge_index.to(dtype),
        edge_attr=edge_attr.to(dtype),
    )
    assert torch.equal(reference.type1, narrow.type1) and torch.equal(reference.type0, narrow.type0)
    padded = model(tokens[None, :4].to(dtype), coors[None, :4], adj_mat=torch.ones(4, 4, dtype=torch.bool), edges=torch.ones(1, 4, 4, dtype=dtype))
    assert padded.type1.shape == (1, 4, model.dim[1], 3)


def test_packed_adjacency_pairs_listed_twice_count_once():
    """``adjacency`` is the sparse ``adj_mat``, a set: symmetrising an already symmetric list
    (every pair twice) must not give those neighbours double weight."""
    model = make_model(attend_sparse_neighbors=True, max_sparse_neighbors=3, num_neighbors=2)
    g = torch.Generator().manual_seed(8)
    feats = torch.randn(8, 5, dtype=torch.float64, generator=g)
    coors = torch.randn(8, 3, dtype=torch.float64, generator=g)
    chain = torch.tensor([[i, i + 1] for i in range(7)]).T
    adjacency = torch.cat([chain, chain.flip(0)], 1)
    once = model.forward_packed(feats, coors, adjacency=adjacency)
    twice = model.forward_packed(feats, coors, adjacency=torch.cat([adjacency, adjacency.flip(0), adjacency], 1))
    assert (once.type1 - twice.type1).abs().max() <= 1e-12
    dense = torch.zeros(8, 8, dtype=torch.bool)
    dense[chain[0], chain[1]] = dense[chain[1], chain[0]] = True
    padded = model(feats[None], coors[None], adj_mat=dense)
    assert (padded.type1[0] - once.type1).abs().max() <= 1e-12


def test_packed_edge_index_pair_listed_twice_is_refused():
    model = make_model(num_edge_tokens=3, edge_dim=4)
    feats, coors = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"edge_index lists the pair \(0, 1\) more than once"):
        model.forward_packed(feats, coors, edge_index=torch.tensor([[0, 0], [1, 1]]), edge_attr=torch.tensor([1, 2]))


def test_packed_pooled_over_no_graphs_has_no_rows():
    """An explicit empty ``graph_index`` names no graph: pooling gives zero rows (without a
    ``graph_index`` the nodes form one graph, which pools to one row even when empty)."""
    model = make_model()
    feats, coors = torch.zeros(0, 5, dtype=torch.float64), torch.zeros(0, 3, dtype=torch.float64)
    assert model.forward_packed(feats, coors, torch.zeros(0, dtype=torch.long), return_pooled=True).type0.shape[0] == 0
    assert model.forward_packed(feats, coors, return_pooled=True).type0.shape[0] == 1


def test_sparse_graph_ids_cost_what_their_graphs_cost():
    """Two graphs with ids 0 and 100,000: the global linear attention works on those two graphs,
    not on 100,001 (it allocated per-id (graphs, heads, d, d) tensors in every layer), and gives
    what ids 0 and 1 give."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        numel = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor):
                    Largest.numel = max(Largest.numel, t.numel())
            return out

    model = make_model(num_linear_attn_heads=2)
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(20, 5, dtype=torch.float64, generator=g)
    coors = torch.randn(20, 3, dtype=torch.float64, generator=g)
    dense = (torch.arange(20) >= 12).long()
    reference = model.forward_packed(feats, coors, dense)
    with Largest():
        sparse = model.forward_packed(feats, coors, dense * 100_000)
    for a, b in zip(sparse.degrees.values(), reference.degrees.values()):
        assert (a - b).abs().max() <= 1e-12
    assert Largest.numel <= 100_001, Largest.numel  # at most one entry per id (node counts), was 12.8M
    pooled = model.forward_packed(feats, coors, dense * 1000, return_pooled=True)
    assert pooled.type0.shape[0] == 1001 and pooled.type0[1:1000].abs().max() == 0
