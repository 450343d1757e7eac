"""Every tensor the library makes is placed on its inputs' device: CUDA readiness without a GPU.

Model and inputs live on the CPU while ``torch.set_default_device("meta")`` is active, so a
tensor made without naming a device (``torch.zeros(n)``, ``torch.arange(n)``, ``torch.tensor(...)``)
lands on ``meta``, and the first operation mixing it with the CPU inputs fails loudly ("Tensor on
device meta is not on the expected device cpu", "Cannot copy out of meta tensor").  On a GPU the
same call would make a CPU tensor next to CUDA inputs: an error or a silent host-device copy.

The library's module-level caches of constants are emptied before each case (so that the code
building them runs under the meta default too, whatever ran earlier in the session) and given
back afterwards (so that a constant built on ``meta`` by a failing case cannot leak into later
tests).
"""
from __future__ import annotations

import contextlib
import sys

import pytest
import torch

from equiformer.testing import assert_equivariant, random_reflection, random_rotation, random_translation, \
    randomize_parameters
from model_factory import chain_adjacency, make_inputs, make_model


def _library_caches() -> tuple[list, list[dict]]:
    """``functools.lru_cache`` functions and module-level dicts of the loaded library modules."""
    functions, dicts = [], []
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "equiformer" or name.startswith("equiformer.")):
            continue
        for attribute, value in list(vars(module).items()):
            if attribute.startswith("__"):  # __builtins__ is a dict too
                continue
            if callable(getattr(value, "cache_clear", None)) and getattr(value, "__module__", None) == name:
                functions.append(value)
            elif type(value) is dict:
                dicts.append(value)
    return functions, dicts


def _holds_tensors(value) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (list, tuple)):
        return any(isinstance(v, torch.Tensor) for v in value)
    return not isinstance(value, type) and any(isinstance(v, torch.Tensor) for v in getattr(value, "__dict__", {}).values())


@contextlib.contextmanager
def meta_default_device():
    """The meta default device, on fresh library caches; the previous default device and the
    caches are restored after, also when the body raises."""
    functions, dicts = _library_caches()
    saved = [dict(d) for d in dicts]
    for f in functions:
        f.cache_clear()
    for d, contents in zip(dicts, saved):
        if any(_holds_tensors(v) for v in contents.values()):
            d.clear()  # a cache of tensors (or of objects holding them): rebuilt under meta
    previous = torch.get_default_device()
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(None if previous == torch.device("cpu") else previous)
        for f in functions:
            f.cache_clear()
        for d, contents in zip(dicts, saved):
            d.clear()
            d.update(contents)


@pytest.fixture
def meta_default():
    with meta_default_device():
        yield


def test_meta_default_is_restored_also_after_a_failure():
    from equiformer.so3.wigner import _GATHER_INDEX, _permuted_index

    cpu = torch.device("cpu")
    _permuted_index((1, 3), (0, 1, 2, 3), cpu)  # a cached index tensor on the CPU
    cached = dict(_GATHER_INDEX)
    with pytest.raises(RuntimeError, match="boom"):
        with meta_default_device():
            assert torch.empty(0).device.type == "meta"
            assert not _GATHER_INDEX, "caches of tensors start empty"
            _permuted_index((1, 3), (0, 1, 2, 3), cpu)  # rebuilt under meta: must not outlive the block
            raise RuntimeError("boom")
    assert torch.empty(0).device.type == "cpu"
    assert _GATHER_INDEX.keys() == cached.keys()
    assert all(_GATHER_INDEX[k] is cached[k] for k in cached)


def _model_case(**overrides):
    """Model and inputs, made on the CPU (the meta default is already active)."""
    with torch.device("cpu"):
        model = make_model(**overrides)
        feats, coors, mask = make_inputs(model, n=12)
        kwargs = {}
        if overrides.get("num_edge_tokens"):
            kwargs["edges"] = torch.randint(0, 3, (2, 12, 12), generator=torch.Generator().manual_seed(3))
        if overrides.get("attend_sparse_neighbors"):
            kwargs["adj_mat"] = chain_adjacency(12)
    return model, feats, coors, mask, kwargs


CASES = {
    "plain": dict(),
    "reversible": dict(reversible=True),
    "edge-chunks": dict(edge_chunk_size=7),
    "edge-chunks-reversible": dict(edge_chunk_size=7, reversible=True),
    "edge-tokens": dict(num_edge_tokens=3, edge_dim=4),
    "adjacency-hops": dict(attend_sparse_neighbors=True, num_adj_degrees_embed=2),
    "mlp-attention": dict(l2_dist_attention=False),
    "l2-attention": dict(l2_dist_attention=True),
    "cg": dict(tensor_product="cg"),
    "linear-heads": dict(num_linear_attn_heads=2),
    "type1-inputs": dict(input_degrees=2, dim_in=(5, 3)),
    "reflection": dict(reflection_equivariance=True, tensor_product="cg"),
    "radius-graph": dict(num_neighbors=float("inf"), valid_radius=2.0),
    "sparse-neighbor-cap": dict(attend_sparse_neighbors=True, max_sparse_neighbors=1, num_neighbors=2),
    "head-options": dict(attend_self=False, single_headed_kv=True, gate_attn_head_outputs=False,
                         ff_include_htype_norms=True, reduce_dim_out=True, linear_out=False),
}


def _forward_backward(model, feats, coors, mask, **kwargs):
    coors = coors.clone().requires_grad_(True)
    out = model(feats, coors, mask, **kwargs)
    loss = sum(t.square().sum() for t in out.degrees.values())
    loss.backward()
    return out, coors.grad


@pytest.mark.parametrize("name", list(CASES))
def test_forward_backward_make_no_tensor_on_the_default_device(name, meta_default):
    model, feats, coors, mask, kwargs = _model_case(**CASES[name])
    out, grad = _forward_backward(model, feats, coors, mask, **kwargs)
    assert all(t.device.type == "cpu" for t in out.degrees.values())
    assert grad.device.type == "cpu" and torch.isfinite(grad).all()
    assert all(p.grad is None or p.grad.device.type == "cpu" for p in model.parameters())


def test_forces_double_backward(meta_default):
    """Forces as ``-dE/dx`` with ``create_graph=True``, then a loss on them: the backward of the
    backward, as force-field training runs it."""
    model, feats, coors, mask, _ = _model_case(reversible=False)
    coors = coors.clone().requires_grad_(True)
    energy = model(feats, coors, mask).type0.sum()
    (forces,) = torch.autograd.grad(-energy, coors, create_graph=True)
    forces.square().sum().backward()
    assert forces.device.type == "cpu"
    assert all(p.grad is None or p.grad.device.type == "cpu" for p in model.parameters())


def test_token_inputs_positions_and_pooling(meta_default):
    with torch.device("cpu"):
        model = make_model(num_tokens=5, num_positions=12, dim_in=None)
        g = torch.Generator().manual_seed(0)
        tokens = torch.randint(0, 5, (2, 12), generator=g)
        coors = torch.randn(2, 12, 3, dtype=torch.float64, generator=g)
    out = model(tokens, coors, return_pooled=True)
    (out.type0.sum() + out.type1.sum()).backward()
    assert out.type1.device.type == "cpu" and out.type1.shape[:2] == (2, model.dim[1])


def test_forward_packed(meta_default):
    overrides = dict(input_degrees=2, dim_in=(5, 3), num_edge_tokens=3, edge_dim=4, attend_sparse_neighbors=True,
                     num_adj_degrees_embed=2, num_linear_attn_heads=1)
    with torch.device("cpu"):
        model = make_model(**overrides)
        g = torch.Generator().manual_seed(0)
        sizes = [5, 8, 3]
        graph_index = torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes))
        n = int(graph_index.numel())
        feats = {0: torch.randn(n, 5, dtype=torch.float64, generator=g),
                 1: torch.randn(n, 3, 3, dtype=torch.float64, generator=g)}
        coors = torch.randn(n, 3, dtype=torch.float64, generator=g)
        starts = torch.tensor([0, 5, 13])
        chain = torch.cat([torch.stack([torch.arange(s, s + k - 1), torch.arange(s + 1, s + k)]) for s, k in
                           zip(starts.tolist(), sizes)], dim=1)
        adjacency = torch.cat([chain, chain.flip(0)], dim=1)
        edge_attr = torch.randint(0, 3, (chain.shape[1],), generator=g)
    coors = coors.requires_grad_(True)
    out = model.forward_packed(feats, coors, graph_index, adjacency=adjacency, edge_index=chain, edge_attr=edge_attr)
    sum(t.square().sum() for t in out.degrees.values()).backward()
    assert out.type1.device.type == "cpu" and coors.grad.device.type == "cpu"
    pooled = model.forward_packed(feats, coors, graph_index, adjacency=adjacency, edge_index=chain,
                                  edge_attr=edge_attr, return_pooled=True)
    assert pooled.type0.device.type == "cpu" and pooled.type0.shape[0] == len(sizes)


# ---- equiformer.so3 and equiformer.testing, the building blocks, on CPU inputs

@pytest.mark.parametrize("lmax", [0, 1, 2, 6])
@pytest.mark.parametrize("normalization", ["component", "integral", "norm"])
def test_spherical_harmonics(lmax, normalization, meta_default):
    from equiformer.so3 import spherical_harmonics

    vectors = torch.randn(7, 3, dtype=torch.float64, device="cpu").requires_grad_(True)
    for normalize in (True, False):
        y = spherical_harmonics(lmax, vectors, normalize=normalize, normalization=normalization)
        assert y.device.type == "cpu" and y.shape == (7, (lmax + 1) ** 2)
        if lmax:  # Y_0 is a constant
            y.square().sum().backward()
            assert vectors.grad.device.type == "cpu"


@pytest.mark.parametrize("count", [5, 4097], ids=["few", "chunked"])  # 4097: above wigner's CPU chunk
def test_wigner_D(count, meta_default):
    from equiformer.so3 import permuted_block_diagonal, wigner_D, wigner_D_block_diagonal

    rotation = torch.linalg.qr(torch.randn(count, 3, 3, dtype=torch.float64, device="cpu")).Q
    rotation = rotation.requires_grad_(True)
    blocks = wigner_D(4, rotation)
    assert [b.device.type for b in blocks] == ["cpu"] * 5
    sum(b.sum() for b in blocks).backward()
    assert rotation.grad.device.type == "cpu"
    assert wigner_D_block_diagonal(2, rotation.detach()).device.type == "cpu"
    assert permuted_block_diagonal(blocks[:3], [2, 0, 1, 3, 4, 5, 6, 7, 8]).device.type == "cpu"


def test_clebsch_gordan_and_edge_rotation(meta_default):
    from equiformer.so3 import clebsch_gordan, edge_to_axis_rotation, safe_unit

    assert clebsch_gordan(1, 2, 3, dtype=torch.float32, device="cpu").device.type == "cpu"
    vectors = torch.randn(6, 3, dtype=torch.float64, device="cpu")
    vectors[0] = 0  # the zero vector's special case
    assert edge_to_axis_rotation(vectors).device.type == "cpu"
    unit, nonzero = safe_unit(vectors)
    assert unit.device.type == nonzero.device.type == "cpu"


def test_testing_helpers(meta_default):
    """``equiformer.testing`` makes its random transforms on the requested device (the CPU here)."""
    g = torch.Generator().manual_seed(0)
    for make in (random_rotation, random_reflection, random_translation):
        assert make(torch.float64, "cpu", g).device.type == "cpu"
    linear = torch.nn.Linear(3, 3, device="cpu")
    randomize_parameters(linear, generator=g)
    assert linear.weight.device.type == "cpu"
    x = torch.randn(4, 3, dtype=torch.float64, device="cpu")
    errors = assert_equivariant(lambda v: v * v.norm(dim=-1, keepdim=True), [x], [1], [1], generator=g)
    assert errors[0] < 1e-12


def test_nn_building_blocks(meta_default):
    """``linear_many`` without a precomputed order, ``ColumnExpansion.membership``, and layer norm
    on CPU modules and inputs: the helpers they call place their index tensors themselves."""
    from equiformer.nn.expand import ColumnExpansion
    from equiformer.nn.linear import EquivariantLinear, linear_many
    from equiformer.nn.norm import EquivariantLayerNorm

    fiber = (4, 3, 2)
    with torch.device("cpu"):
        linears = [EquivariantLinear(fiber, (2, 2, 1)), EquivariantLinear(fiber, (3, 1, 2))]
        norm = EquivariantLayerNorm(fiber)
        expand = ColumnExpansion(torch.tensor([0, 0, 1, 2, 2]), 3)
        x = torch.randn(6, 4 + 3 * 3 + 2 * 5, requires_grad=True)
    outputs = linear_many(linears, norm(x))
    sum(o.square().sum() for o in outputs).backward()
    assert x.grad.device.type == "cpu" and all(o.device.type == "cpu" for o in outputs)
    assert expand.membership(8).device.type == "cpu"


def test_training_data_pipeline(meta_default):
    """Crops, noise and the data order of ``denoise.py`` are drawn on the CPU (seeded CPU
    generators), whatever the default device; the training loop moves batches to its device."""
    from equiformer.data import load_embedded
    from equiformer.training.data import BatchOrder, make_batch

    order = BatchOrder(5, seed=1)
    picks = order.next(7)
    order.load_state_dict(order.state_dict())
    with torch.device("cpu"):
        chains = load_embedded()[:2]
    batch = make_batch(chains, [seed for _, seed in picks[:2]], 12, 1.0, torch.float32)
    assert batch.noisy.device.type == batch.batch.coords.device.type == "cpu"
    assert torch.isfinite(batch.noisy).all()


def test_a_model_built_under_a_default_device_lives_there_whole():
    """``with torch.device(d): Equiformer(...)`` puts parameters *and* derived constants on ``d``
    (constants are computed on the CPU, then moved with the model)."""
    with meta_default_device():
        model = make_model(num_edge_tokens=3, edge_dim=2, num_linear_attn_heads=1, tensor_product="cg")
        tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    assert len(tensors) > 20
    assert {t.device.type for t in tensors.values()} == {"meta"}, [n for n, t in tensors.items() if t.device.type != "meta"]
