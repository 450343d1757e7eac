"""Checkpoints: exact state_dict round trips, loading in another process with
``torch.load(weights_only=True)``, only parameters in the file, and clear errors on mismatch."""
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from equiformer import Equiformer
from model_factory import chain_adjacency, make_inputs, make_model

CONFIG = dict(
    dim=(8, 4, 4), dim_in=5, num_degrees=3, heads=(2, 1, 1), dim_head=(4, 2, 2), depth=2,
    num_neighbors=6, valid_radius=2.5, num_edge_tokens=3, edge_dim=2, attend_sparse_neighbors=True,
    num_adj_degrees_embed=2, num_linear_attn_heads=1, reversible=True, reduce_dim_out=True,
)


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _load(data: bytes):
    return torch.load(io.BytesIO(data), weights_only=True)


def _run(model, seed=0, n=10):
    feats, coors, mask = make_inputs(model, n=n, seed=seed)
    edges = torch.randint(0, 3, (2, n, n), generator=torch.Generator().manual_seed(seed))
    return model(feats[0], coors, mask, adj_mat=chain_adjacency(n), edges=edges)


def test_state_dict_round_trip_is_exact():
    model = make_model(**CONFIG)
    state = model.state_dict()
    loaded = _load(_saved(state))
    assert list(loaded) == list(state)
    assert all(torch.equal(loaded[k], state[k]) and loaded[k].dtype == state[k].dtype for k in state)

    fresh = Equiformer.from_config(model.config).double()  # other random weights
    assert not all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), state.values()))
    fresh.load_state_dict(loaded)
    for a, b in zip(_run(fresh).degrees.values(), _run(model).degrees.values()):
        assert torch.equal(a, b)


def test_checkpoint_holds_parameters_only():
    """Index maps, Clebsch-Gordan couplings, basis centres... are rebuilt by the constructor
    (non-persistent buffers), so a checkpoint is its parameters and nothing more."""
    model = make_model(**CONFIG)
    buffers = [name for name, _ in model.named_buffers()]
    assert len(buffers) > 10  # there are derived constants, and none of them is saved
    assert set(model.state_dict()) == {name for name, _ in model.named_parameters()}
    parameter_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    assert len(_saved(model.state_dict())) < parameter_bytes + 64 * 1024  # + zip / pickle framing


def test_config_is_plain_and_rebuilds_the_model():
    model = make_model(**CONFIG)
    config = model.config.to_dict()
    # every keyword given is there, as given (sequences as lists, the form JSON gives back)
    assert config == {**config, **{k: list(v) if isinstance(v, tuple) else v for k, v in CONFIG.items()}}
    assert config["check_inputs"] is True and "splits" in config  # defaults too
    assert _load(_saved(config)) == config  # primitives only: loads with weights_only=True
    for rebuilt in (Equiformer.from_config(config), Equiformer.from_config(model.config)):
        assert rebuilt.config == model.config
        assert [(k, v.shape) for k, v in rebuilt.state_dict().items()] == [(k, v.shape) for k, v in model.state_dict().items()]
    config["depth"] = 99  # a copy: the model's own config is not changed
    assert model.config.depth == 2


def test_from_config_names_an_unknown_keyword():
    with pytest.raises(TypeError, match="not_a_keyword"):
        Equiformer.from_config({**CONFIG, "not_a_keyword": 1})


@pytest.mark.parametrize(
    "change,fragments",
    [
        (dict(dim=(8, 6, 4)), ["size mismatch", "torch.Size([6", "torch.Size([4"]),
        (dict(depth=3), ["Missing key(s)", "blocks.blocks.2."]),
        (dict(l2_dist_attention=False), ["Missing key(s)", "Unexpected key(s)", "to_logits"]),
        (dict(num_edge_tokens=None, edge_dim=None), ["Unexpected key(s)", "edge_emb.weight"]),
    ],
)
def test_checkpoint_of_another_config_is_refused_clearly(change, fragments):
    state = make_model(**CONFIG).state_dict()
    other = Equiformer(**{**CONFIG, **change})
    with pytest.raises(RuntimeError) as info:
        other.load_state_dict(state)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message[:500]!r}"


SAVE_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    sys.path.insert(0, {tests!r})
    torch.set_num_threads(1)
    from model_factory import make_model
    from test_serialisation import CONFIG, _run

    model = make_model(**CONFIG)
    torch.save({{"config": model.config.to_dict(), "state_dict": model.state_dict(),
                "outputs": list(_run(model, seed=5).degrees.values())}}, {path!r})
    """
)


def test_save_in_one_process_load_in_another(tmp_path: Path):
    path = tmp_path / "model.pt"
    here = Path(__file__).resolve().parent
    script = SAVE_SCRIPT.format(tests=str(here.parent), path=str(path))
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(here)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    checkpoint = torch.load(path, weights_only=True)
    model = Equiformer.from_config(checkpoint["config"]).double()
    model.load_state_dict(checkpoint["state_dict"])
    outputs = list(_run(model, seed=5).degrees.values())
    assert len(outputs) == 3
    for here_out, there_out in zip(outputs, checkpoint["outputs"]):
        assert torch.equal(here_out, there_out)


def test_numpy_numbers_are_stored_as_plain_python_and_the_config_is_a_private_copy():
    """numpy scalars passed validation but broke ``as_fiber`` and the weights_only round trip;
    the caller's lists were kept, so mutating them changed the model's config."""
    import numpy as np

    dims = [np.int64(8), np.int64(4)]
    model = Equiformer(
        dim=dims, num_degrees=np.int64(2), heads=1, dim_head=np.int64(4), depth=np.int64(1),
        reversible=np.bool_(False), valid_radius=np.float64(5.0),
    )
    Equiformer(dim=np.int64(8), heads=1, dim_head=4, depth=1)  # a numpy int broadcast per degree
    config = model.config.to_dict()
    assert _load(_saved(config)) == config
    assert type(config["dim"][0]) is int and type(config["reversible"]) is bool and type(config["valid_radius"]) is float
    dims.append(4)
    config["dim"].append(4)
    assert model.config.dim == (8, 4) and model.config.to_dict()["dim"] == [8, 4]
    assert Equiformer.from_config(model.config).config == model.config
    assert Equiformer.from_config(model.config.to_dict()).config == model.config
