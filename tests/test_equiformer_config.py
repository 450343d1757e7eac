"""EquiformerConfig: the constructor settings of Equiformer as one frozen, validated object.

The checks of every constructor argument live here (they moved from
tests/robustness/test_input_validation.py with the checks themselves): each bad argument is
refused with the same exception type and message whether it reaches EquiformerConfig directly,
Equiformer(...) or Equiformer.from_config(dict)."""
import dataclasses
import inspect
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from equiformer import Equiformer, EquiformerConfig
from equiformer.config import FIELD_NAMES

GOLDEN = Path(__file__).parent / "golden" / "checkpoints" / "l2_so2.pt"

BASE = dict(dim=4, num_degrees=2, depth=1, heads=1, dim_head=2)

# settings off their defaults, every value distinct from its neighbours', so that a setting read
# into the wrong place shows
RICH = dict(
    dim=(8, 6, 4), dim_in=(5, 3), num_degrees=3, input_degrees=2, heads=(2, 2, 1), dim_head=(4, 3, 2),
    depth=1, valid_radius=2.5, num_neighbors=6, max_sparse_neighbors=3, num_tokens=None,
    num_positions=11, num_edge_tokens=7, edge_dim=2, attend_sparse_neighbors=True, num_adj_degrees_embed=2,
    adj_dim=3, embedding_grad_frac=0.25, tensor_product="cg", reflection_equivariance=True,
    edge_chunk_size=64, check_inputs=False, radial_max_distance=4.0, num_radial_basis=9,
    reduce_dim_out=True, reversible=True, num_linear_attn_heads=1,
)

# id: (overrides, exception type, strings the message must contain)
CONSTRUCTOR_CASES = {
    "num_edge_tokens_without_edge_dim": (dict(num_edge_tokens=4), ValueError, ["num_edge_tokens=4", "edge_dim"]),
    "num_edge_tokens_edge_dim_zero": (dict(num_edge_tokens=4, edge_dim=0), ValueError, ["num_edge_tokens", "edge_dim=0"]),
    "heads_wrong_length": (dict(heads=(1, 1, 1)), ValueError, ["heads", "num_degrees=2", "(1, 1, 1)"]),
    "dim_head_wrong_length": (dict(dim_head=(2,)), ValueError, ["dim_head", "2", "(2,)"]),
    "dim_wrong_length": (dict(dim=(4, 4, 4)), ValueError, ["dim", "one value per degree"]),
    "dim_zero": (dict(dim=(4, 0)), ValueError, ["dim", ">= 1", "(4, 0)"]),
    "dim_negative": (dict(dim=-3), ValueError, ["dim", "-3"]),
    "dim_float": (dict(dim=4.0), TypeError, ["dim", "4.0"]),
    "heads_zero": (dict(heads=0), ValueError, ["heads", ">= 1"]),
    "dim_head_not_numbers": (dict(dim_head="2"), TypeError, ["dim_head", "'2'"]),
    "num_neighbors_zero_without_sparse": (dict(num_neighbors=0), ValueError, ["num_neighbors=0", "attend_sparse_neighbors"]),
    "no_neighbours_of_any_kind": (
        dict(num_neighbors=0, attend_sparse_neighbors=True, max_sparse_neighbors=0), ValueError,
        ["num_neighbors=0", "max_sparse_neighbors=0"],
    ),
    "num_neighbors_negative": (dict(num_neighbors=-1), ValueError, ["num_neighbors", "-1"]),
    "num_neighbors_fractional": (dict(num_neighbors=2.5), TypeError, ["num_neighbors", "2.5"]),
    "max_sparse_neighbors_negative": (dict(max_sparse_neighbors=-2), ValueError, ["max_sparse_neighbors", "-2"]),
    "input_degrees_above_num_degrees": (dict(input_degrees=3), ValueError, ["input_degrees", "num_degrees (2)", "3"]),
    "input_degrees_zero": (dict(input_degrees=0), ValueError, ["input_degrees", ">= 1", "0"]),
    "num_degrees_zero": (dict(num_degrees=0), ValueError, ["num_degrees", ">= 1"]),
    "dim_in_wrong_length": (dict(dim_in=(3, 2)), ValueError, ["dim_in", "input_degrees=1", "(3, 2)"]),
    "dim_in_zero": (dict(input_degrees=2, dim_in=(3, 0)), ValueError, ["dim_in", ">= 1"]),
    "depth_negative": (dict(depth=-1), ValueError, ["depth", "-1"]),
    "num_tokens_zero": (dict(num_tokens=0), ValueError, ["num_tokens", ">= 1", "0"]),
    "num_positions_float": (dict(num_positions=10.0), TypeError, ["num_positions", "10.0"]),
    "edge_dim_negative": (dict(edge_dim=-1), ValueError, ["edge_dim", "-1"]),
    "num_adj_degrees_embed_zero": (dict(num_adj_degrees_embed=0), ValueError, ["num_adj_degrees_embed", ">= 1"]),
    "adj_dim_negative": (dict(adj_dim=-1, num_adj_degrees_embed=1), ValueError, ["adj_dim", "-1"]),
    "valid_radius_zero": (dict(valid_radius=0), ValueError, ["valid_radius", "> 0", "0"]),
    "valid_radius_nan": (dict(valid_radius=math.nan), ValueError, ["valid_radius", "nan"]),
    "radial_max_distance_negative": (dict(radial_max_distance=-1.0), ValueError, ["radial_max_distance", "-1.0"]),
    "radial_max_distance_infinite": (dict(radial_max_distance=math.inf), ValueError, ["radial_max_distance", "inf"]),
    "num_radial_basis_one": (dict(num_radial_basis=1), ValueError, ["num_radial_basis", ">= 2"]),
    "radial_hidden_dim_zero": (dict(radial_hidden_dim=0), ValueError, ["radial_hidden_dim", ">= 1"]),
    "num_linear_attn_heads_negative": (dict(num_linear_attn_heads=-1), ValueError, ["num_linear_attn_heads", "-1"]),
    "ff_mult_zero": (dict(ff_mult=0), ValueError, ["ff_mult", ">= 1"]),
    "tensor_product_unknown": (dict(tensor_product="fft"), ValueError, ["tensor_product", "'so2'", "'fft'"]),
    "mmax_negative": (dict(mmax=-1), ValueError, ["mmax", ">= 0", "-1"]),
    "mmax_float": (dict(mmax=1.0), TypeError, ["mmax", "1.0"]),
    "mmax_with_cg": (dict(num_degrees=3, mmax=1, tensor_product="cg"), ValueError, ["mmax=1", "tensor_product='so2'", "'cg'"]),
    "embedding_grad_frac_above_one": (dict(embedding_grad_frac=1.5), ValueError, ["embedding_grad_frac", "[0, 1]", "1.5"]),
    "attn_leakyrelu_slope_nan": (dict(attn_leakyrelu_slope=math.nan), ValueError, ["attn_leakyrelu_slope", "nan"]),
    "edge_chunk_size_zero": (dict(edge_chunk_size=0), ValueError, ["edge_chunk_size", "0"]),
    "flag_not_bool": (dict(reversible="yes"), TypeError, ["reversible", "'yes'"]),
    "flag_int_not_0_or_1": (dict(reversible=2), TypeError, ["reversible", "1 or 0", "2"]),
    "check_inputs_not_bool": (dict(check_inputs=None), TypeError, ["check_inputs", "None"]),
}


BUILDERS = {
    "EquiformerConfig": lambda **kw: EquiformerConfig(**kw),
    "Equiformer": lambda **kw: Equiformer(**kw),
    "from_dict": lambda **kw: EquiformerConfig.from_dict(kw),
    "from_config": lambda **kw: Equiformer.from_config(kw),
}


def _saved_and_loaded(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)


def _plain_only(value) -> bool:
    if isinstance(value, list):
        return all(_plain_only(v) for v in value)
    return value is None or type(value) in (bool, int, float, str)


# ---------------------------------------------------------------------------------- the object
def test_fields_are_the_constructor_keywords_with_the_same_defaults():
    """One field per keyword of Equiformer.__init__, in its order (the constructor unpacks the
    fields by that order), with its default; both keyword-only, ``dim`` required in both."""
    parameters = [p for p in inspect.signature(Equiformer.__init__).parameters.values() if p.name != "self"]
    fields = dataclasses.fields(EquiformerConfig)
    assert [p.name for p in parameters] == [f.name for f in fields] == list(FIELD_NAMES)
    for parameter, field in zip(parameters, fields):
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY and field.kw_only, parameter.name
        if parameter.default is inspect.Parameter.empty:
            assert field.default is dataclasses.MISSING, parameter.name
        else:
            assert field.default == parameter.default and type(field.default) is type(parameter.default), parameter.name
    with pytest.raises(TypeError):
        EquiformerConfig(4)  # keyword-only, as the constructor
    with pytest.raises(TypeError, match="dim"):
        EquiformerConfig()


def test_flags_are_the_fields_annotated_bool():
    from equiformer.config import _FLAGS

    assert set(_FLAGS) == {
        "reduce_dim_out", "init_out_zero", "attend_self", "linear_out", "single_headed_kv", "ff_include_htype_norms",
        "l2_dist_attention", "reversible", "attend_sparse_neighbors", "gate_attn_head_outputs",
        "reflection_equivariance", "check_inputs", "smooth_cutoff",
    }


def test_config_is_frozen_and_hashable():
    config = EquiformerConfig(**{**BASE, "dim": [4, 2]})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.depth = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        del config.dim
    assert config.dim == (4, 2)  # a tuple: nothing inside can be changed either
    assert hash(config) == hash(EquiformerConfig(**{**BASE, "dim": (4, 2)}))
    changed = dataclasses.replace(config, depth=3)
    assert changed.depth == 3 and config.depth == 1
    with pytest.raises(ValueError, match="depth must be >= 0, got -1"):
        dataclasses.replace(config, depth=-1)  # a changed copy is checked again


def test_values_are_stored_plain_and_not_aliased():
    """numpy numbers, flags given as 1/0 and the caller's lists become plain Python values."""
    dims = [np.int64(8), np.int64(4)]
    config = EquiformerConfig(
        dim=dims, num_degrees=np.int64(2), heads=1, dim_head=np.int64(4), depth=np.int64(1),
        reversible=np.bool_(False), reduce_dim_out=1, attend_self=0, valid_radius=np.float32(2.5),
    )
    dims.append(np.int64(2))
    assert config.dim == (8, 4) and all(type(d) is int for d in config.dim)
    assert type(config.num_degrees) is int and type(config.depth) is int and type(config.dim_head) is int
    assert config.reversible is False and config.reduce_dim_out is True and config.attend_self is False
    assert type(config.valid_radius) is float and config.valid_radius == 2.5


# ---------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("settings", [BASE, RICH, {**BASE, "valid_radius": math.inf, "num_neighbors": 8.0}],
                         ids=["base", "rich", "infinite"])
def test_round_trip_through_a_weights_only_checkpoint(settings):
    config = EquiformerConfig(**settings)
    stored = config.to_dict()
    assert list(stored) == list(FIELD_NAMES)
    assert all(_plain_only(v) for v in stored.values()), stored
    loaded = _saved_and_loaded({"config": stored})["config"]
    assert loaded == stored
    assert EquiformerConfig.from_dict(loaded) == config


@pytest.mark.parametrize("settings", [BASE, RICH, {**BASE, "valid_radius": math.inf, "num_neighbors": 8.0}],
                         ids=["base", "rich", "infinite"])
def test_round_trip_through_json(settings):
    config = EquiformerConfig(**settings)
    text = json.dumps(config.to_dict())
    infinite = any(v == math.inf for v in config.to_dict().values())
    assert ("Infinity" in text) == infinite  # float('inf') (no limit) as Python's json writes and reads it
    assert json.loads(text) == config.to_dict()  # to_dict is already in the form JSON gives back
    assert EquiformerConfig.from_dict(json.loads(text)) == config


def test_from_dict_names_unknown_keys():
    with pytest.raises(TypeError, match=r"unknown Equiformer settings \['not_a_keyword', 'zzz'\]"):
        EquiformerConfig.from_dict({**BASE, "zzz": 1, "not_a_keyword": 2})
    with pytest.raises(TypeError, match="not_a_keyword"):
        Equiformer.from_config({**BASE, "not_a_keyword": 1})
    with pytest.raises(TypeError, match="takes a dict of settings, got list"):
        EquiformerConfig.from_dict([("dim", 4)])
    assert EquiformerConfig.from_dict({"dim": 4}) == EquiformerConfig(dim=4)  # missing keys: defaults


# ---------------------------------------------------------------------------------- the model
def test_model_config_is_the_frozen_object():
    model = Equiformer(**BASE)
    assert isinstance(model.config, EquiformerConfig)
    assert model.config is model.config  # frozen: shared, not copied
    assert model.config == EquiformerConfig(**BASE)


def test_model_reads_the_checked_settings():
    """The constructor body reads the config (plain values, by field), not the raw arguments."""
    torch.manual_seed(0)
    model = Equiformer(**{**RICH, "num_positions": np.int64(11), "reversible": 1, "check_inputs": np.bool_(False)})
    config = model.config
    assert model.dim == config.dim and model.dim_in == config.dim_in
    assert (model.num_degrees, model.input_degrees) == (3, 2)
    assert model.num_positions == 11 and type(model.num_positions) is int
    assert model.check_inputs is False and model.blocks.reversible is True
    assert (model.valid_radius, model.num_neighbors, model.max_sparse_neighbors) == (2.5, 6, 3)
    assert (model.embedding_grad_frac, model.tensor_product, model.reflection_equivariance) == (0.25, "cg", True)
    assert (model.edge_chunk_size, model.edge_dim, model.num_adj_degrees_embed) == (64, 2, 2)
    assert model.edge_emb.num_embeddings == 7 and model.hop_emb.embedding_dim == 3
    assert model.distance_basis is not None and model.reduce_dim_out is True and model.head is not None


@pytest.mark.parametrize("form", ["object", "dict", "json"])
def test_from_config_builds_the_same_architecture(form):
    model = Equiformer(**RICH)
    given = {"object": model.config, "dict": model.config.to_dict(),
             "json": json.loads(json.dumps(model.config.to_dict()))}[form]
    rebuilt = Equiformer.from_config(given)
    assert rebuilt.config == model.config
    rebuilt.load_state_dict(model.state_dict(), strict=True)


def test_from_config_takes_a_dict_saved_by_an_earlier_version():
    """Golden checkpoints store ``model.config`` as the plain dict earlier versions returned."""
    record = torch.load(GOLDEN, weights_only=True)
    assert isinstance(record["config"], dict)
    model = Equiformer.from_config(record["config"]).double()
    model.load_state_dict(record["state_dict"], strict=True)
    assert model.config == EquiformerConfig.from_dict(record["config"])
    saved = {k: list(v) if isinstance(v, tuple) else v for k, v in record["config"].items()}
    # settings added since keep their defaults, which reproduce the earlier numerics
    assert set(model.config.to_dict()) - set(saved) == {"smooth_cutoff", "mmax"}
    assert model.config.to_dict() == {**saved, "smooth_cutoff": False, "mmax": None}


# ---------------------------------------------------------------------------------- checks
@pytest.mark.parametrize("builder", sorted(BUILDERS))
@pytest.mark.parametrize("case", sorted(CONSTRUCTOR_CASES))
def test_bad_constructor_arguments_are_refused(case, builder):
    overrides, error, fragments = CONSTRUCTOR_CASES[case]
    with pytest.raises(error) as info:
        BUILDERS[builder](**{**BASE, **overrides})
    assert type(info.value) is error
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_constructor_accepts_the_equivalent_good_values():
    """Controls for the cases above: numpy integers and flags, ``inf`` neighbour counts, an
    integral float count, per-degree tuples, and the combinations that do fit together."""
    model = Equiformer(
        **{**BASE, "dim": (np.int64(4), 2), "heads": (1, 2)},
        num_neighbors=8.0,
        max_sparse_neighbors=math.inf,
        attend_sparse_neighbors=np.bool_(True),
        num_edge_tokens=3,
        edge_dim=2,
        num_adj_degrees_embed=2,
        adj_dim=3,
        reduce_dim_out=True,
        linear_out=False,
        valid_radius=math.inf,
    )
    assert model.dim == (4, 2)
    assert Equiformer(**BASE, num_neighbors=0, attend_sparse_neighbors=True).num_neighbors == 0


@pytest.mark.parametrize("builder", sorted(BUILDERS))
@pytest.mark.parametrize(
    "keywords, fragment",
    [(dict(adj_dim=4), "adj_dim=4 is ignored"), (dict(linear_out=False), "linear_out=False is ignored")],
    ids=["adj_dim-without-hops", "linear_out-without-head"],
)
def test_keywords_without_effect_warn_but_build(keywords, fragment, builder):
    """equiformer-pytorch accepts these combinations (and ignores the keyword), so a config
    written for it must build here too; we say that the keyword does nothing, at the caller's
    line, however the settings arrive."""
    with pytest.warns(UserWarning, match=fragment) as caught:
        built = BUILDERS[builder](**{**BASE, **keywords})
    assert caught[0].filename == __file__
    if isinstance(built, Equiformer):
        reference = Equiformer(**BASE)
        assert [p.shape for p in built.parameters()] == [p.shape for p in reference.parameters()]


def test_flags_take_1_and_0_and_store_booleans():
    model = Equiformer(**BASE, reduce_dim_out=1, reversible=0)
    assert model.config.reduce_dim_out is True and model.config.reversible is False
    assert model.head is not None and not model.blocks.reversible
