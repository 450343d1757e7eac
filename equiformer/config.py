"""Every constructor setting of ``Equiformer`` in one frozen, validated dataclass.

``EquiformerConfig`` is the one owner of the constructor's arguments: their names and defaults
(those of ``Equiformer.__init__``, which builds one of these first), their checks (in
``__post_init__``: every error names the argument, what was expected and what was received;
``TypeError`` for a wrong Python type, ``ValueError`` for a wrong value, range or combination) and
their normal form (plain Python types, so that ``to_dict()`` loads with
``torch.load(weights_only=True)`` and dumps to JSON).

The checks of ``forward`` inputs stay in ``equiformer.validation``.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import typing
import warnings
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Mapping, Sequence

import numpy as np

from .nn.edge_layout import EdgeLayout

PerDegree = int | tuple[int, ...]
"""An int for every degree, or one int per degree (any sequence of ints is taken and stored as a tuple)."""


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, (bool, np.bool_))


def _is_flag(value: Any) -> bool:
    """True/False, numpy booleans, or the integers 1/0 (equiformer-pytorch takes any truthy value;
    we take the unambiguous ones)."""
    return isinstance(value, (bool, np.bool_)) or (_is_int(value) and value in (0, 1))


def _is_real(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, (bool, np.bool_))


def _plain(value: Any) -> Any:
    """``value`` in plain Python types: numpy numbers to bool/int/float, lists and tuples to new
    tuples (a frozen config must not share, or hold, the caller's mutable lists)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return float(value)
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    return value


def _warn(message: str) -> None:
    """A ``UserWarning`` at the user's line: the first frame outside this package, however the
    config was reached (``EquiformerConfig(...)``, ``Equiformer(...)``, ``from_config``), which a
    fixed ``stacklevel`` cannot point at for all of them."""
    package = __name__.partition(".")[0]
    frame, level = sys._getframe(1), 2  # stacklevel 2: _warn's caller
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] == package:
        frame, level = frame.f_back, level + 1  # dataclass-made __init__ runs in this module's globals too
    warnings.warn(message, UserWarning, stacklevel=level)


@dataclass(frozen=True, kw_only=True)
class EquiformerConfig:
    """The keyword arguments of ``Equiformer.__init__``, checked and in plain Python types.

    Same names and defaults as the constructor (see its docstring for their meaning).  Flags may
    be given as 1/0 or numpy booleans and are stored as ``bool``; numpy numbers become ``int`` /
    ``float``; per-degree sequences become tuples.  Frozen: derive a changed copy with
    ``dataclasses.replace(config, depth=4)`` (which checks it again).
    """

    dim: PerDegree
    dim_in: PerDegree | None = None
    num_degrees: int = 2
    input_degrees: int = 1
    heads: PerDegree = 8
    dim_head: PerDegree = 24
    depth: int = 2
    valid_radius: float = 1e5
    num_neighbors: float = math.inf
    reduce_dim_out: bool = False
    radial_hidden_dim: int = 64
    num_tokens: int | None = None
    num_positions: int | None = None
    num_edge_tokens: int | None = None
    edge_dim: int | None = None
    attend_self: bool = True
    splits: int = 4  # accepted for equiformer-pytorch compatibility, unused and unchecked
    linear_out: bool = True
    embedding_grad_frac: float = 0.5
    single_headed_kv: bool = False
    ff_include_htype_norms: bool = False
    l2_dist_attention: bool = True
    reversible: bool = False
    attend_sparse_neighbors: bool = False
    gate_attn_head_outputs: bool = True
    num_adj_degrees_embed: int | None = None
    adj_dim: int = 0
    max_sparse_neighbors: float = math.inf
    num_linear_attn_heads: int = 0
    linear_attn_dim_head: int = 8
    attn_hidden_dim_mult: int = 4
    attn_leakyrelu_slope: float = 0.1
    init_out_zero: bool = True
    ff_mult: int = 4
    tensor_product: str = "so2"
    reflection_equivariance: bool = False
    num_radial_basis: int = 16
    radial_max_distance: float | None = None
    edge_chunk_size: int | None = None
    check_inputs: bool = True
    smooth_cutoff: bool = False
    mmax: int | None = None

    def __post_init__(self) -> None:
        # check the values as given (so messages show them as given), then store their plain form
        _check(self)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            object.__setattr__(self, f.name, bool(value) if f.name in _FLAGS else _plain(value))

    def to_dict(self) -> dict[str, Any]:
        """Every setting as a plain dict: bool/int/float/str/None and lists of ints (tuples become
        lists, as JSON gives them back).  It loads with ``torch.load(weights_only=True)``, and
        ``json.dumps`` writes ``float('inf')`` (no neighbour limit) as ``Infinity``, which
        ``json.loads`` reads back."""
        return {f.name: _as_list(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "EquiformerConfig":
        """Inverse of ``to_dict``; also takes the plain-dict configs of earlier versions (stored
        in checkpoints as ``model.config``).  Missing keys get their defaults; unknown keys are a
        ``TypeError`` naming them (as an unknown keyword of ``Equiformer`` is)."""
        if not isinstance(values, Mapping):
            raise TypeError(f"EquiformerConfig.from_dict takes a dict of settings, got {type(values).__name__}")
        unknown = sorted(set(values) - set(FIELD_NAMES), key=str)
        if unknown:
            raise TypeError(f"unknown Equiformer settings {unknown}; the settings are {list(FIELD_NAMES)}")
        return cls(**values)


def _as_list(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# ---------------------------------------------------------------------------------- checks
def _check_int(config: EquiformerConfig, name: str, minimum: int, optional: bool = False) -> None:
    value = getattr(config, name)
    if optional and value is None:
        return
    if not _is_int(value):
        what = "None or an integer" if optional else "an integer"
        raise TypeError(f"{name} must be {what} >= {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_count(config: EquiformerConfig, name: str) -> None:
    """A neighbour count: an integer >= 0 or ``inf`` (no limit)."""
    value = getattr(config, name)
    if not _is_real(value) or not (value == math.inf or float(value).is_integer()):
        raise TypeError(f"{name} must be an integer >= 0 or float('inf'), got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def _check_per_degree(config: EquiformerConfig, name: str, count_name: str) -> None:
    """An int for every degree, or one positive int per degree (``count_name`` of them)."""
    value, count = getattr(config, name), getattr(config, count_name)
    values = (value,) if _is_int(value) else value
    if not isinstance(values, Sequence) or isinstance(values, str) or not all(_is_int(v) for v in values):
        raise TypeError(f"{name} must be an int or a sequence of ints (one per degree), got {value!r}")
    if not _is_int(value) and len(values) != count:
        raise ValueError(f"{name} must give one value per degree ({count_name}={count}), got {len(values)}: {tuple(value)}")
    if any(v < 1 for v in values):
        raise ValueError(f"{name} must be >= 1 for every degree, got {value!r}")


def _check(config: EquiformerConfig) -> None:
    """Refuse settings that are malformed or cannot work together; warn about settings that have
    no effect in their combination."""
    for name in _FLAGS:
        if not _is_flag(getattr(config, name)):
            raise TypeError(f"{name} must be True or False (or 1 or 0), got {getattr(config, name)!r}")
    _check_int(config, "num_degrees", 1)
    _check_int(config, "input_degrees", 1)
    if config.input_degrees > config.num_degrees:
        raise ValueError(f"input_degrees must be <= num_degrees ({config.num_degrees}), got {config.input_degrees}")
    for name in ("dim", "heads", "dim_head"):
        _check_per_degree(config, name, "num_degrees")
    if config.dim_in is not None:
        _check_per_degree(config, "dim_in", "input_degrees")
    _check_int(config, "depth", 0)
    for name in ("radial_hidden_dim", "linear_attn_dim_head", "attn_hidden_dim_mult", "ff_mult"):
        _check_int(config, name, 1)
    _check_int(config, "num_linear_attn_heads", 0)
    _check_int(config, "adj_dim", 0)
    _check_int(config, "num_radial_basis", 2)
    for name in ("num_tokens", "num_positions", "num_edge_tokens", "num_adj_degrees_embed"):
        _check_int(config, name, 1, optional=True)
    _check_int(config, "edge_dim", 0, optional=True)
    _check_int(config, "edge_chunk_size", 1, optional=True)
    _check_count(config, "num_neighbors")
    _check_count(config, "max_sparse_neighbors")

    radius = config.valid_radius
    if not _is_real(radius) or not radius > 0:  # NaN fails too
        raise ValueError(f"valid_radius must be a number > 0 (float('inf') for no cutoff), got {radius!r}")
    radial_max = config.radial_max_distance
    if radial_max is not None and (not _is_real(radial_max) or not 0 < radial_max < math.inf):
        raise ValueError(f"radial_max_distance must be None or a finite number > 0, got {radial_max!r}")
    frac = config.embedding_grad_frac
    if not _is_real(frac) or not 0.0 <= frac <= 1.0:
        raise ValueError(f"embedding_grad_frac must be a number in [0, 1], got {frac!r}")
    slope = config.attn_leakyrelu_slope
    if not _is_real(slope) or not math.isfinite(slope):
        raise ValueError(f"attn_leakyrelu_slope must be a finite number, got {slope!r}")
    _check_int(config, "mmax", 0, optional=True)
    # the layout's owner checks the name, and that a truncating mmax has an edge frame to act in
    EdgeLayout.for_tensor_product(config.tensor_product, mmax=config.mmax, lmax=config.num_degrees - 1)

    # combinations
    if config.num_edge_tokens is not None and not config.edge_dim:
        raise ValueError(
            f"num_edge_tokens={config.num_edge_tokens} needs edge_dim >= 1 (the width of the edge-token "
            f"embedding), got edge_dim={config.edge_dim!r}"
        )
    if config.num_neighbors == 0 and not config.attend_sparse_neighbors:
        raise ValueError("num_neighbors=0 leaves nothing to attend to unless attend_sparse_neighbors=True")
    if config.num_neighbors == 0 and config.max_sparse_neighbors == 0:
        raise ValueError("num_neighbors=0 with max_sparse_neighbors=0 leaves nothing to attend to (no edges at all)")
    # settings without effect in this combination: equiformer-pytorch ignores them silently, so a
    # config written for it must still build; we say so
    if config.adj_dim > 0 and config.num_adj_degrees_embed is None:
        _warn(
            f"adj_dim={config.adj_dim} is ignored: it is the width of the hop-distance embedding, "
            "which needs num_adj_degrees_embed >= 1 (got None)"
        )
    if not config.linear_out and not config.reduce_dim_out:
        _warn(
            "linear_out=False is ignored: it picks the output head of reduce_dim_out=True, and with "
            "reduce_dim_out=False there is no head"
        )


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(EquiformerConfig))
"""The settings, in the order of ``Equiformer.__init__``'s keywords."""

# the flags are the fields annotated ``bool``: a new flag is checked and stored as bool by
# declaring it so, with no second list to keep in step
_FLAGS: tuple[str, ...] = tuple(
    name for name, hint in typing.get_type_hints(EquiformerConfig).items() if hint is bool
)

__all__ = ["EquiformerConfig", "FIELD_NAMES"]
