"""Edge chunks of whole receivers (``edge_chunks.receiver_chunks``): they partition the edges
and the receivers in order, respect the size bound, and a layer run chunk by chunk gives the
unchunked outputs and gradients, also when the edges are not stored receiver by receiver."""
import pytest
import torch

from equiformer.nn import L2DistanceAttention, MLPAttention, layout
from equiformer.nn.edge_chunks import receiver_chunks
from equiformer.nn.edge_geometry import EdgeGeometry
from equiformer.nn.edge_layout import EdgeLayout

N = 15
FIBER, HEADS, DIM_HEAD = (8, 4, 4), (2, 1, 1), (4, 4, 4)


def _geometry(shuffle: bool, chunk: int | None, seed: int = 0) -> EdgeGeometry:
    """Uneven in-degrees: receivers without edges first, in the middle and last, and one receiver
    with more edges than a chunk holds."""
    g = torch.Generator().manual_seed(seed)
    degree = torch.randint(1, 5, (N,), generator=g)
    degree[[0, 6, N - 1]] = 0
    degree[9] = 11
    dst = torch.arange(N).repeat_interleave(degree)
    src = (dst + 1 + torch.randint(0, N - 1, (dst.numel(),), generator=g)) % N
    vec = torch.randn(dst.numel(), 3, dtype=torch.float64, generator=g)
    vec[[2, 17]] = 0.0  # coincident nodes: edges without a direction
    weight = torch.rand(dst.numel(), dtype=torch.float64, generator=g)
    edge_attr = torch.randn(dst.numel(), 3, dtype=torch.float64, generator=g)
    if shuffle:
        order = torch.randperm(dst.numel(), generator=g)
        dst, src, vec, weight, edge_attr = dst[order], src[order], vec[order], weight[order], edge_attr[order]
    geometry = EdgeGeometry.build(
        vec, dst, src, num_nodes=N, node_graph=torch.zeros(N, dtype=torch.long), num_graphs=1,
        weight=weight, edge_attr=edge_attr, lmax=len(FIBER) - 1, edge_layout=EdgeLayout.for_tensor_product("so2"),
        edge_chunk_size=chunk,
    )
    return geometry


@pytest.mark.parametrize("shuffle", [False, True], ids=["by-receiver", "shuffled"])
@pytest.mark.parametrize("size", [1, 7, 20])
def test_receiver_chunks_partition_edges_and_receivers(shuffle, size):
    geometry = _geometry(shuffle, size)
    chunks = receiver_chunks(geometry)
    assert sum(count for count, _ in chunks) == N
    assert len(chunks) > 1
    is_zero = torch.zeros(geometry.num_edges, dtype=torch.bool)
    is_zero[geometry.zero_length] = True
    start, seen = 0, []
    for count, chunk in chunks:
        assert chunk.num_nodes == count and chunk.node_graph.shape == (count,)
        local = chunk.dst
        assert local.numel() > 0 and bool((local >= 0).all() and (local < count).all())
        if chunk.num_edges > size:  # only a receiver with more edges than a chunk holds
            assert local.unique().numel() == 1
        zero = set(chunk.zero_length.tolist())
        for e in range(chunk.num_edges):
            # the parent's edge, found by its (random, unique) edge scalars
            parent = int((geometry.edge_attr == chunk.edge_attr[e]).all(-1).nonzero())
            assert int(geometry.dst[parent]) == int(local[e]) + start
            assert int(geometry.src[parent]) == int(chunk.src[e])
            assert float(geometry.weight[parent]) == float(chunk.weight[e])
            assert torch.equal(geometry.wigner[1][parent], chunk.wigner[1][e])
            assert (e in zero) == bool(is_zero[parent])
            seen.append(parent)
        start += count
    assert sorted(seen) == list(range(geometry.num_edges))  # every edge once
    assert geometry.dst[seen].tolist() == sorted(geometry.dst.tolist())  # receivers in order


def test_chunk_bounds_follow_the_chunk_size():
    few = receiver_chunks(_geometry(False, 7))
    many = receiver_chunks(_geometry(False, 1))
    assert len(many) > len(few)
    assert all(chunk.num_edges <= 7 or chunk.dst.unique().numel() == 1 for _, chunk in few)
    assert all(chunk.dst.unique().numel() == 1 for _, chunk in many)  # one receiver each


def _layer(kind: str, attend_self: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    klass = L2DistanceAttention if kind == "l2" else MLPAttention
    layer = klass(
        FIBER, HEADS, DIM_HEAD, edge_attr_dim=3, attend_self=attend_self, single_headed_kv=False,
        gate_attn_head_outputs=True, num_linear_attn_heads=0, linear_attn_dim_head=8,
        edge_layout=EdgeLayout.for_tensor_product("so2"), init_out_zero=False,
    ).double()
    for p in layer.parameters():  # no zero-initialised part: every path reaches the output
        torch.nn.init.normal_(p, std=0.3)
    return layer


def _output_and_grads(layer, geometry):
    layer.zero_grad()
    x = torch.randn(N, layout(FIBER).size, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).requires_grad_()
    out = layer(x, geometry)
    (out * out).sum().backward()
    return out.detach(), x.grad, [p.grad.clone() for p in layer.parameters()]


@pytest.mark.parametrize("shuffle", [False, True], ids=["by-receiver", "shuffled"])
@pytest.mark.parametrize("attend_self", [True, False], ids=["self", "no-self"])
@pytest.mark.parametrize("kind", ["l2", "mlp"])
def test_attention_in_receiver_chunks_equals_whole(kind, attend_self, shuffle):
    layer = _layer(kind, attend_self)
    whole = _output_and_grads(layer, _geometry(shuffle, None))
    chunked = _output_and_grads(layer, _geometry(shuffle, 7))
    assert whole[0].abs().max() > 0
    assert (chunked[0] - whole[0]).abs().max() <= 1e-12 * whole[0].abs().max()
    assert (chunked[1] - whole[1]).norm() <= 1e-12 * whole[1].norm()
    for a, b in zip(chunked[2], whole[2]):
        assert (a - b).norm() <= 1e-11 * b.norm().clamp(min=1e-30)
