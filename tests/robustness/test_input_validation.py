"""Bad forward inputs fail loudly, with the exception type the kind of
mistake calls for (TypeError: types and dtypes; ValueError: shapes, values, devices) and a message
that names the argument and says what was expected and what was received."""
import math

import pytest
import torch

from equiformer import Equiformer
from model_factory import chain_adjacency

B, N = 2, 6

# tiny models, one per kind of input; float64 so that float32 tensors count as a dtype mismatch
MODELS = {
    "features": dict(dim=(4, 2), dim_in=3, num_degrees=2),
    "degrees": dict(dim=(4, 2), dim_in=(3, 2), num_degrees=2, input_degrees=2),
    "tokens": dict(
        dim=(4, 2), num_degrees=2, num_tokens=5, num_positions=8, num_edge_tokens=3, edge_dim=2,
        attend_sparse_neighbors=True, num_adj_degrees_embed=1,
    ),
    "edge_features": dict(dim=(4, 2), dim_in=3, num_degrees=2, edge_dim=2),
}


def build(kind: str, **overrides) -> Equiformer:
    torch.manual_seed(0)
    config = dict(depth=1, heads=1, dim_head=2, num_neighbors=4)
    config.update(MODELS[kind], **overrides)
    return Equiformer(**config).double()


def good_arguments(kind: str) -> dict:
    """Arguments that ``build(kind)`` accepts; each case below spoils one of them."""
    g = torch.Generator().manual_seed(0)
    args = dict(coors=torch.randn(B, N, 3, dtype=torch.float64, generator=g), mask=torch.ones(B, N, dtype=torch.bool))
    if kind == "tokens":
        args["inputs"] = torch.randint(0, 5, (B, N), generator=g)
        args["adj_mat"] = chain_adjacency(N)
        args["edges"] = torch.randint(0, 3, (B, N, N), generator=g)
    elif kind == "degrees":
        args["inputs"] = {0: torch.randn(B, N, 3, dtype=torch.float64), 1: torch.randn(B, N, 2, 3, dtype=torch.float64)}
    else:
        args["inputs"] = torch.randn(B, N, 3, dtype=torch.float64, generator=g)
    if kind == "edge_features":
        args["edges"] = torch.randn(B, N, N, 2, dtype=torch.float64, generator=g)
    return args


def _set(key, value):
    return lambda a: a.update({key: value(a) if callable(value) else value})


def _set_degree(l, value):
    return lambda a: a["inputs"].update({l: value(a)})


meta = torch.device("meta")

# id: (model kind, spoil the arguments, exception type, strings the message must contain)
FORWARD_CASES = {
    # coordinates
    "coors_not_a_tensor": ("features", _set("coors", lambda a: a["coors"].tolist()), TypeError, ["coors", "Tensor", "list"]),
    "coors_integer": ("features", _set("coors", lambda a: a["coors"].long()), TypeError, ["coors", "int64"]),
    "coors_last_axis_2": ("features", _set("coors", lambda a: a["coors"][..., :2]), ValueError, ["coors", "(batch, nodes, 3)", "(2, 6, 2)"]),
    "coors_2d": ("features", _set("coors", lambda a: a["coors"][0]), ValueError, ["coors", "(6, 3)"]),
    "coors_nan": ("features", lambda a: a["coors"].__setitem__((1, 4, 0), math.nan), ValueError, ["coors", "finite", "batch 1, node 4"]),
    "coors_inf": ("features", lambda a: a["coors"].__setitem__((0, 2, 1), math.inf), ValueError, ["coors", "finite", "check_inputs"]),
    "coors_float32_model_float64": ("features", _set("coors", lambda a: a["coors"].float()), TypeError, ["coors", "float32", "float64"]),
    "coors_other_device": ("features", _set("coors", lambda a: a["coors"].to(meta)), ValueError, ["coors", "meta", "cpu"]),
    # features
    "inputs_not_a_tensor": ("features", _set("inputs", lambda a: a["inputs"].numpy()), TypeError, ["inputs", "ndarray"]),
    "inputs_batch_mismatch": ("features", _set("inputs", lambda a: a["inputs"][:1]), ValueError, ["inputs", "(2, 6, 3)", "(1, 6, 3)"]),
    "inputs_nodes_mismatch": ("features", _set("inputs", lambda a: a["inputs"][:, :5]), ValueError, ["inputs", "(2, 6, 3)", "(2, 5, 3)"]),
    "inputs_wrong_width": ("features", _set("inputs", lambda a: a["inputs"][..., :2]), ValueError, ["inputs", "dim_in[0]", "(2, 6, 2)"]),
    "inputs_integer_without_num_tokens": ("features", _set("inputs", torch.zeros(B, N, dtype=torch.long)), TypeError, ["inputs", "num_tokens", "int64"]),
    "inputs_float32_model_float64": ("features", _set("inputs", lambda a: a["inputs"].float()), TypeError, ["inputs", "float32", "float64"]),
    "inputs_other_device": ("features", _set("inputs", lambda a: a["inputs"].to(meta)), ValueError, ["inputs", "meta"]),
    "tokens_float_with_num_tokens": ("tokens", _set("inputs", lambda a: a["inputs"].double()), TypeError, ["inputs", "num_tokens", "float64"]),
    "tokens_too_large": ("tokens", lambda a: a["inputs"].__setitem__((1, 3), 5), ValueError, ["inputs", "num_tokens=5", "[0, 5]"]),
    "tokens_negative": ("tokens", lambda a: a["inputs"].__setitem__((0, 0), -1), ValueError, ["inputs", "num_tokens=5", "-1"]),
    "tokens_wrong_shape": ("tokens", _set("inputs", lambda a: a["inputs"][:, :, None]), ValueError, ["inputs", "(2, 6)", "(2, 6, 1)"]),
    "tokens_other_device": ("tokens", _set("inputs", lambda a: a["inputs"].to(meta)), ValueError, ["inputs", "meta"]),
    "tokens_beyond_num_positions": (
        "tokens",
        lambda a: a.update(
            inputs=torch.zeros(B, 9, dtype=torch.long), coors=torch.randn(B, 9, 3, dtype=torch.float64),
            mask=None, adj_mat=chain_adjacency(9), edges=torch.zeros(B, 9, 9, dtype=torch.long),
        ),
        ValueError,
        ["num_positions=8", "9"],
    ),
    # degree dictionaries
    "dict_missing_degree": ("degrees", lambda a: a["inputs"].pop(1), ValueError, ["inputs", "missing [1]"]),
    "dict_extra_degree": ("degrees", _set_degree(2, lambda a: torch.randn(B, N, 2, 5, dtype=torch.float64)), ValueError, ["inputs", "extra [2]"]),
    "dict_string_keys": ("degrees", _set("inputs", lambda a: {str(k): v for k, v in a["inputs"].items()}), TypeError, ["inputs", "'0'"]),
    "dict_wrong_last_axis": ("degrees", _set_degree(1, lambda a: a["inputs"][1][..., :2]), ValueError, ["inputs[1]", "2l+1", "(2, 6, 2, 2)"]),
    "dict_wrong_channels": ("degrees", _set_degree(1, lambda a: a["inputs"][1][:, :, :1]), ValueError, ["inputs[1]", "dim_in[1]", "(2, 6, 1, 3)"]),
    "dict_integer_degree1": ("degrees", _set_degree(1, lambda a: a["inputs"][1].long()), TypeError, ["inputs[1]", "int64"]),
    "dict_expected_got_tensor": ("degrees", _set("inputs", lambda a: a["inputs"][0]), TypeError, ["inputs", "dict", "input_degrees=2"]),
    # mask
    "mask_float": ("features", _set("mask", lambda a: a["mask"].double()), TypeError, ["mask", "bool", "float64"]),
    "mask_wrong_shape": ("features", _set("mask", lambda a: a["mask"][:, :4]), ValueError, ["mask", "(2, 6)", "(2, 4)"]),
    "mask_other_device": ("features", _set("mask", lambda a: a["mask"].to(meta)), ValueError, ["mask", "meta"]),
    # adjacency
    "adj_mat_wrong_shape": ("tokens", _set("adj_mat", chain_adjacency(N + 1)), ValueError, ["adj_mat", "(6, 6)", "(7, 7)"]),
    "adj_mat_wrong_batch": ("tokens", _set("adj_mat", chain_adjacency(N)[None].expand(3, N, N)), ValueError, ["adj_mat", "(2, 6, 6)", "(3, 6, 6)"]),
    "adj_mat_other_device": ("tokens", _set("adj_mat", chain_adjacency(N).to(meta)), ValueError, ["adj_mat", "meta"]),
    "adj_mat_missing": ("tokens", _set("adj_mat", None), ValueError, ["adj_mat", "required", "attend_sparse_neighbors"]),
    "adj_mat_nan": ("tokens", _set("adj_mat", chain_adjacency(N).double().index_fill(0, torch.tensor([2]), float("nan"))), ValueError, ["adj_mat", "NaN"]),
    # edges
    "edges_token_too_large": ("tokens", lambda a: a["edges"].__setitem__((0, 1, 2), 3), ValueError, ["edges", "num_edge_tokens=3", "3]"]),
    "edges_token_negative": ("tokens", lambda a: a["edges"].__setitem__((0, 1, 2), -2), ValueError, ["edges", "num_edge_tokens=3", "-2"]),
    "edges_float_for_tokens": ("tokens", _set("edges", lambda a: a["edges"].double()), TypeError, ["edges", "integer", "float64"]),
    "edges_token_wrong_shape": ("tokens", _set("edges", lambda a: a["edges"][:, :5]), ValueError, ["edges", "(2, 6, 6)", "(2, 5, 6)"]),
    "edges_other_device": ("tokens", _set("edges", lambda a: a["edges"].to(meta)), ValueError, ["edges", "meta"]),
    "edges_missing": ("tokens", _set("edges", None), ValueError, ["edges", "required", "edge_dim=2"]),
    "edges_features_wrong_width": ("edge_features", _set("edges", lambda a: a["edges"][..., :1]), ValueError, ["edges", "edge_dim", "(2, 6, 6, 2)", "(2, 6, 6, 1)"]),
    "edges_features_integer": ("edge_features", _set("edges", lambda a: a["edges"].long()), TypeError, ["edges", "int64"]),
    "edges_without_edge_dim": ("features", _set("edges", torch.zeros(B, N, N, dtype=torch.long)), ValueError, ["edges", "edge_dim"]),
}


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_good_arguments_are_accepted(kind):
    """The control: every case below changes exactly one thing about arguments that work."""
    out = build(kind)(**good_arguments(kind))
    assert torch.isfinite(out.type0).all() and out.type0.shape[:2] == (B, N)


@pytest.mark.parametrize("case", sorted(FORWARD_CASES))
def test_bad_forward_input_is_refused(case):
    _assert_refused(FORWARD_CASES[case], good_arguments, lambda model: model)


def _assert_refused(case, good, entry) -> None:
    """Spoil one argument of ``good(kind)``; ``entry(model)`` must raise ``error`` naming it."""
    kind, spoil, error, fragments = case
    model = build(kind)
    args = good(kind)
    spoil(args)
    with pytest.raises(error) as info:
        entry(model)(**args)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def good_packed_arguments(kind: str) -> dict:
    """``good_arguments`` as ``forward_packed`` takes them: B graphs of N nodes, concatenated."""
    args = good_arguments(kind)
    flat = {"coors": args["coors"].reshape(B * N, 3), "graph_index": torch.arange(B).repeat_interleave(N)}
    inputs = args["inputs"]
    flat["inputs"] = {l: t.reshape(B * N, *t.shape[2:]) for l, t in inputs.items()} if isinstance(inputs, dict) else inputs.reshape(B * N, *inputs.shape[2:])
    chain = torch.stack([torch.arange(B * N - 1), torch.arange(1, B * N)])
    chain = chain[:, (chain[0] // N) == (chain[1] // N)]  # bonds within each graph
    if kind == "tokens":
        flat["adjacency"] = chain
        flat["edge_index"], flat["edge_attr"] = chain, torch.randint(0, 3, (chain.shape[1],))
    if kind == "edge_features":
        flat["edge_index"], flat["edge_attr"] = chain, torch.randn(chain.shape[1], 2, dtype=torch.float64)
    return flat


PACKED_CASES = {
    "coors_padded_shape": ("features", _set("coors", lambda a: a["coors"][None]), ValueError, ["coors", "(nodes, 3)", "(1, 12, 3)"]),
    "coors_float32": ("features", _set("coors", lambda a: a["coors"].float()), TypeError, ["coors", "float32", "float64"]),
    "coors_nan": ("features", _set("coors", lambda a: a["coors"].index_fill(0, torch.tensor([3]), math.nan)), ValueError, ["coors", "finite"]),
    "graph_index_float": ("features", _set("graph_index", lambda a: a["graph_index"].double()), TypeError, ["graph_index", "integer", "float64"]),
    "graph_index_short": ("features", _set("graph_index", lambda a: a["graph_index"][:-1]), ValueError, ["graph_index", "(12,)", "(11,)"]),
    "graph_index_negative": ("features", _set("graph_index", lambda a: a["graph_index"] - 1), ValueError, ["graph_index", "non-negative"]),
    "features_rows": ("features", _set("inputs", lambda a: a["inputs"][:-1]), ValueError, ["inputs", "(nodes, dim_in[0])", "(12, 3)", "(11, 3)"]),
    "degree_rows": ("degrees", _set_degree(1, lambda a: a["inputs"][1][:-2]), ValueError, ["inputs[1]", "(nodes, dim_in[1], 2l+1)", "(12, 2, 3)"]),
    "tokens_batched": ("tokens", _set("inputs", lambda a: a["inputs"][None]), ValueError, ["inputs", "token ids of shape (nodes)", "(12,)"]),
    "graph_beyond_num_positions": (
        "tokens", lambda a: a.update(graph_index=torch.zeros(B * N, dtype=torch.long), adjacency=a["adjacency"]),
        ValueError, ["num_positions=8", "12 nodes"],
    ),
    "adjacency_across_graphs": ("tokens", _set("adjacency", torch.tensor([[0], [N]])), ValueError, ["adjacency", "different graphs"]),
    "adjacency_float": ("tokens", _set("adjacency", lambda a: a["adjacency"].double()), TypeError, ["adjacency", "integer", "float64"]),
    "edges_missing": ("tokens", lambda a: (a.pop("edge_index"), a.pop("edge_attr")), ValueError, ["edge_index", "required", "edge_dim=2"]),
    "edge_attr_missing": ("tokens", lambda a: a.pop("edge_attr"), ValueError, ["edge_attr", "required"]),
    "edge_index_wrong_shape": ("tokens", _set("edge_index", lambda a: a["edge_index"].T), ValueError, ["edge_index", "(2, P)"]),
    "edge_tokens_out_of_range": ("tokens", _set("edge_attr", lambda a: a["edge_attr"] + 3), ValueError, ["edge_attr", "num_edge_tokens=3"]),
    "edge_tokens_as_floats": ("tokens", _set("edge_attr", lambda a: a["edge_attr"].double()), TypeError, ["edge_attr", "integer", "float64"]),
    "edge_features_width": ("edge_features", _set("edge_attr", lambda a: a["edge_attr"][:, :1]), ValueError, ["edge_attr", "(P, edge_dim)", "(10, 2)", "(10, 1)"]),
    "edge_features_float32": ("edge_features", _set("edge_attr", lambda a: a["edge_attr"].float()), TypeError, ["edge_attr", "float32"]),
    "edges_without_edge_inputs": ("features", lambda a: a.update(edge_index=torch.tensor([[0], [1]]), edge_attr=torch.tensor([1])), ValueError, ["edge_index", "no edge inputs"]),
}


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_good_packed_arguments_are_accepted(kind):
    out = build(kind).forward_packed(**good_packed_arguments(kind))
    assert torch.isfinite(out.type0).all() and out.type0.shape[0] == B * N


@pytest.mark.parametrize("case", sorted(PACKED_CASES))
def test_bad_packed_input_is_refused(case):
    _assert_refused(PACKED_CASES[case], good_packed_arguments, lambda model: model.forward_packed)


def test_value_checks_can_be_switched_off():
    """``check_inputs=False`` skips the checks that read values (a host sync on GPUs); the
    metadata checks stay."""
    model = build("features", check_inputs=False)
    args = good_arguments("features")
    args["coors"][0, 1] = math.nan
    out = model(**args)  # no ValueError (the NaN node silently loses its neighbours)
    assert out.type0.shape == (B, N, 4)
    model.check_inputs = True
    with pytest.raises(ValueError, match="coors"):
        model(**args)
    model.check_inputs = False
    with pytest.raises(ValueError, match="mask"):
        model(**{**args, "mask": args["mask"][:, :2]})


def test_non_finite_coordinates_of_padding_are_allowed():
    """Padding may hold anything (sidechainnet 1.x pads with NaN); real nodes stay finite."""
    model = build("features")
    args = good_arguments("features")
    args["mask"][1, 3:] = False
    args["coors"][1, 3:] = math.nan
    out = model(**args)
    assert torch.isfinite(out.type0).all() and torch.isfinite(out.type1).all()


# the constructor arguments are checked by EquiformerConfig: their tests are in tests/test_equiformer_config.py


def test_padding_may_hold_any_token_and_edge_ids():
    """Padding is never read, so its ids may be anything (-1 is a common pad value), as its
    coordinates may; ids at real nodes (and pairs of real nodes) are still checked."""
    model = build("tokens")
    args = good_arguments("tokens")
    args["mask"][1, -3:] = False
    reference = model(**args)
    spoiled = {**args, "inputs": args["inputs"].clone(), "edges": args["edges"].clone()}
    spoiled["inputs"][1, -3:] = -1
    spoiled["edges"][1, -1, :] = 99  # pairs with a padded node
    spoiled["edges"][1, :, -2] = -7
    out = model(**spoiled)
    for a, b in zip(out.degrees.values(), reference.degrees.values()):
        assert torch.equal(a, b)
    spoiled["inputs"][1, 0] = -1  # a real node
    with pytest.raises(ValueError, match=r"inputs must be ids in \[0, num_tokens=5\) at real nodes, got values in \[-1"):
        model(**spoiled)
    spoiled["inputs"][1, 0] = 0
    spoiled["edges"][1, 0, 1] = 3  # a pair of real nodes
    with pytest.raises(ValueError, match=r"edges must be ids in \[0, num_edge_tokens=3\) at real nodes"):
        model(**spoiled)


def test_adjacency_a_model_does_not_use_is_ignored_with_a_warning():
    """equiformer-pytorch ignores such an adjacency silently; we keep its results (no error)
    but say so, pointing at the caller's line."""
    model = build("features")
    args = good_arguments("features")
    plain = model(**args)
    with pytest.warns(UserWarning, match="adj_mat is ignored") as caught:
        out = model(**args, adj_mat=chain_adjacency(N))
    assert caught[0].filename == __file__
    assert torch.equal(out.type0, plain.type0)
    packed = good_packed_arguments("features")
    with pytest.warns(UserWarning, match="adjacency is ignored") as caught:
        model.forward_packed(**packed, adjacency=torch.tensor([[0], [1]]))
    assert caught[0].filename == __file__
