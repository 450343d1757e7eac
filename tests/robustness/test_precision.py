"""Precision: float64 stays float64 end to end; bf16 / fp16 autocast run forward and backward with
finite results close to float32 (softmax, norms and distances stay in fp32; matrix products,
the Wigner recursion's included, run in the lower precision)."""
import collections
import copy
import itertools

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from equiformer import Equiformer
from equiformer.testing import randomize_parameters
from model_factory import chain_adjacency, make_inputs, make_model
from robustness_support import assert_finite_forward_backward, weighted_loss


class FloatDtypes(TorchDispatchMode):
    """Counts every floating-point tensor produced by an ATen op, by (op, dtype)."""

    def __init__(self):
        super().__init__()
        self.produced = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                self.produced[(str(func), t.dtype)] += 1
        return out


@pytest.mark.parametrize("attention,path", list(itertools.product(["l2", "mlp"], ["so2", "cg"])))
def test_float64_end_to_end(attention, path):
    """No op in forward or backward makes a float32 (or lower) tensor: constants are copied to the
    caller's dtype, nothing is rounded on the way.  Every optional input path is switched on."""
    model = make_model(
        l2_dist_attention=attention == "l2", tensor_product=path, reversible=True, num_linear_attn_heads=1,
        input_degrees=2, dim_in=(5, 3), num_edge_tokens=3, edge_dim=4, attend_sparse_neighbors=True,
        num_adj_degrees_embed=2, adj_dim=2, num_positions=16, depth=1,
    )
    feats, coors, mask = make_inputs(model, n=12)
    edges = torch.randint(0, 3, (2, 12, 12), generator=torch.Generator().manual_seed(0))
    with FloatDtypes() as mode:
        out, grad = assert_finite_forward_backward(model, feats, coors, mask, adj_mat=chain_adjacency(12), edges=edges)
    lower = {key: count for key, count in mode.produced.items() if key[1] != torch.float64}
    assert not lower, f"ops producing non-float64 tensors: {lower}"
    assert sum(mode.produced.values()) > 100  # the mode did see the computation
    assert grad.dtype == torch.float64 and all(t.dtype == torch.float64 for t in out.degrees.values())


@pytest.mark.parametrize("attention", ["l2", "mlp"])
def test_constants_are_exact_in_the_dtype_a_model_is_converted_to(attention):
    """A model built under the float32 default and converted with ``.double()`` computes what
    one built under float64 does: computed constants (head scales, the norms' averaging weights,
    the distance basis' centres) are not left at their float32 rounding (outputs differed by
    ~1e-8 relative), and converting back gives the float32 ones again."""
    config = dict(dim=(6, 3, 5), num_degrees=3, heads=2, dim_head=3, depth=2, dim_in=4, num_radial_basis=7,
                  valid_radius=3.0, radial_hidden_dim=8, l2_dist_attention=attention == "l2")
    assert torch.get_default_dtype() == torch.float32
    converted = Equiformer(**config).double()
    randomize_parameters(converted, generator=torch.Generator().manual_seed(1))
    torch.set_default_dtype(torch.float64)
    try:
        native = Equiformer(**config)
    finally:
        torch.set_default_dtype(torch.float32)
    native.load_state_dict(converted.state_dict())
    constants = [name for name, b in native.named_buffers() if b.is_floating_point()]
    assert any(name.endswith("head_scale") for name in constants) == (attention == "l2")
    for name, buffer in converted.named_buffers():
        assert torch.equal(buffer, dict(native.named_buffers())[name]), name
    g = torch.Generator().manual_seed(2)
    feats, coors = torch.randn(1, 12, 4, generator=g, dtype=torch.float64), torch.randn(1, 12, 3, generator=g, dtype=torch.float64)
    with torch.no_grad():
        for a, b in zip(converted(feats, coors).degrees.values(), native(feats, coors).degrees.values()):
            assert (a - b).abs().max() <= 1e-15 * b.abs().max()
    single = Equiformer(**config)
    for name, buffer in native.float().named_buffers():
        assert torch.equal(buffer, dict(single.named_buffers())[name]), name


def denoise_like(reversible: bool) -> Equiformer:
    """The shape of denoise.py's model: backbone tokens, bonds as sparse neighbours and hop
    embeddings, type-1 output."""
    torch.manual_seed(0)
    model = Equiformer(
        num_tokens=84, dim=(16, 8, 8, 8), num_degrees=4, heads=2, dim_head=8, depth=2, reversible=reversible,
        attend_sparse_neighbors=True, num_adj_degrees_embed=2, num_neighbors=8, valid_radius=10.0,
        reduce_dim_out=True, l2_dist_attention=False,
    )
    randomize_parameters(model, generator=torch.Generator().manual_seed(1))
    return model


def backbone_like_batch(n=24):
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, 84, (2, n), generator=g)
    coors = 1.5 * torch.randn(2, n, 3, generator=g).cumsum(1)  # a random walk, like a chain
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[1, 18:] = False
    return tokens, coors, mask, chain_adjacency(n)


# relative deviation from float32, max over outputs; measured ~2e-2 (bf16) and ~3e-3 (fp16)
AUTOCAST_TOLERANCE = {torch.bfloat16: 1e-1, torch.float16: 2e-2}


@pytest.mark.parametrize("reversible", [False, True], ids=["residual", "reversible"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_autocast_forward_backward_cpu(dtype, reversible):
    model = denoise_like(reversible)
    tokens, coors, mask, adj = backbone_like_batch()
    reference = model(tokens, coors, mask, adj_mat=adj)
    with torch.autocast("cpu", dtype=dtype):
        out, grad = assert_finite_forward_backward(model, tokens, coors, mask, adj_mat=adj)
    assert grad.abs().max() > 0
    assert len(out.degrees) == model.num_degrees
    for l, (low, high) in enumerate(zip(out.degrees.values(), reference.degrees.values())):
        error = ((low.float() - high).abs().max() / high.abs().max()).item()
        assert error <= AUTOCAST_TOLERANCE[dtype], f"type{l}: relative deviation {error:.2e} from float32"


@pytest.mark.parametrize("reversible", [False, True], ids=["residual", "reversible"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_model_forward_backward_cpu(dtype, reversible):
    """A model converted to bf16 / fp16 (no autocast) runs end to end: the neighbour search ranks
    distances in float32, and normalised features come back in the model's dtype.  The reference
    is the float32 model on the same rounded coordinates: rounding positions to bf16 (0.06 A at
    15 A) can change which neighbours are nearest, a property of the input, not of the model.
    Measured deviations: 4.3e-2 (bf16), 7.3e-3 (fp16)."""
    model = denoise_like(reversible)
    tokens, coors, mask, adj = backbone_like_batch()
    coors = coors.to(dtype)
    reference = model(tokens, coors.float(), mask, adj_mat=adj)
    low_model = copy.deepcopy(model).to(dtype)
    out, grad = assert_finite_forward_backward(low_model, tokens, coors, mask, adj_mat=adj)
    assert grad.dtype == dtype and grad.abs().max() > 0
    for l, (low, high) in enumerate(zip(out.degrees.values(), reference.degrees.values())):
        assert low.dtype == dtype
        error = ((low.float() - high).abs().max() / high.abs().max()).item()
        assert error <= AUTOCAST_TOLERANCE[dtype], f"type{l}: relative deviation {error:.2e} from float32"


def test_reversible_backward_with_uniform_higher_degrees_matches_autograd():
    """Equal channel counts for l >= 1 select the order-major SO(2) layout, whose cached rotation
    blocks once outlived their graph in the reversible backward (fixed in 4dcfdf7); with forces
    (coordinates requiring grad) the memory-saving backward must give plain autograd's gradients."""
    grads = []
    for memory_saving in (True, False):
        model = make_model(dim=(8, 4, 4), dim_head=(4, 2, 2), reversible=True, depth=2)
        model.blocks.memory_saving = memory_saving
        feats, coors, mask = make_inputs(model, n=10)
        coors.requires_grad_()
        out = model(feats, coors, mask)
        params = list(model.parameters())
        grads.append(torch.autograd.grad(weighted_loss(out.degrees.values()), [coors, *params]))
    for a, b in zip(*grads):
        assert (a - b).abs().max() <= 1e-10 * (1 + b.abs().max())
