"""Global linear attention over each graph's invariant features (every node sees every node).

Softmax-kernel linear attention (queries normalised over features, keys over nodes), computed per
graph with segment sums, so cost is linear in the number of nodes and padding never enters.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .scatter import segment_sum


class GlobalLinearAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_gate = nn.Linear(dim, heads * dim_head)

    @property
    def dim_out(self) -> int:
        return self.heads * self.dim_head

    def forward(self, x: Tensor, node_graph: Tensor, num_graphs: int) -> Tensor:
        """``x``: ``(N, dim)`` scalars; returns ``(N, heads * dim_head)``."""
        n = x.shape[0]
        q, k, v = self.to_qkv(x).view(n, 3, self.heads, self.dim_head).unbind(1)  # (N, H, D)
        q = q.softmax(dim=-1)
        # softmax of keys over the nodes of each graph
        k = k.to(torch.promote_types(k.dtype, torch.float32))  # half precisions: exp in fp32
        peak = k.new_full((num_graphs, self.heads, self.dim_head), float("-inf"))
        peak = peak.scatter_reduce(0, node_graph[:, None, None].expand_as(k), k, "amax").detach()
        k = torch.exp(k - peak.index_select(0, node_graph))
        k = (k / segment_sum(k, node_graph, num_graphs).index_select(0, node_graph)).to(v.dtype)
        context = segment_sum(k[..., :, None] * v[..., None, :], node_graph, num_graphs)  # (G, H, D, D)
        out = torch.einsum("nhd,nhde->nhe", q, context.index_select(0, node_graph))
        out = out.reshape(n, self.heads * self.dim_head)
        return out * torch.sigmoid(self.to_gate(x))
