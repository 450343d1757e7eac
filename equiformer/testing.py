"""Equivariance checks that users can run on their own models and functions.

Inputs and outputs are typed by degree: ``None`` or ``0`` (untouched: token ids, masks, adjacency, invariants),
``"coords"`` (Cartesian positions: rotated and translated), or an integer ``l`` (features whose
last axis has ``2l + 1`` components in our spherical-harmonic basis: rotated by the Wigner-D
block, and multiplied by ``(-1)^l`` under an improper rotation).  Degree 1 is Cartesian xyz, so
vectors rotate as ``v @ R.T``.

Tolerances are relative to the output scale and depend on the dtype: float64 leaves only
rounding (1e-10), float32 accumulates ~1e-7 per operation through deep networks (1e-4), half
precisions keep three significant digits at best.
"""
from __future__ import annotations

from typing import Callable, Sequence, Union

import torch
from torch import Tensor

from .so3 import wigner_D

Kind = Union[int, str, None]

_TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 1e-2}


def default_tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance for an equivariance check in ``dtype``."""
    return _TOLERANCE.get(dtype, 1e-4)


def _draw_device(generator: torch.Generator | None) -> torch.device:
    """Where random draws are made: the generator's device (the CPU without one), whatever the
    default device; the results are then moved to the requested device."""
    return generator.device if generator is not None else torch.device("cpu")


def random_rotation(
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """A uniformly random proper rotation ``(3, 3)`` (from a random unit quaternion)."""
    q = torch.randn(4, dtype=torch.float64, generator=generator, device=_draw_device(generator))
    w, x, y, z = (q / q.norm()).tolist()
    r = torch.tensor(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ],
        dtype=torch.float64,
        device="cpu",
    )
    return r.to(dtype=dtype, device=device)


def random_reflection(
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """A random improper rotation (det -1): a mirror through a random plane."""
    n = torch.randn(3, dtype=torch.float64, generator=generator, device=_draw_device(generator))
    n = n / n.norm()
    return (torch.eye(3, dtype=torch.float64, device=n.device) - 2 * torch.outer(n, n)).to(dtype=dtype, device=device)


def random_translation(
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    scale: float = 10.0,
) -> Tensor:
    noise = torch.randn(3, dtype=torch.float64, generator=generator, device=_draw_device(generator))
    return (scale * noise).to(dtype=dtype, device=device)


def transform(x: Tensor | None, kind: Kind, rotation: Tensor, translation: Tensor | None = None) -> Tensor | None:
    """Apply ``(rotation, translation)`` to one value of the given kind."""
    if x is None or kind is None:
        return x
    r = rotation.to(dtype=x.dtype, device=x.device)
    if kind == "coords":
        out = x @ r.transpose(-1, -2)
        return out if translation is None else out + translation.to(dtype=x.dtype, device=x.device)
    if not isinstance(kind, int) or kind < 0:
        raise ValueError(f"kind must be None, 'coords' or a degree >= 0, got {kind!r}")
    if kind == 0:
        return x  # invariant, whatever its trailing shape
    if x.shape[-1] != 2 * kind + 1:
        raise ValueError(f"a degree-{kind} value needs a last axis of {2 * kind + 1}, got {tuple(x.shape)}")
    d = wigner_D(kind, r)[kind]  # includes the parity (-1)^l when det(rotation) = -1
    return x @ d.transpose(-1, -2)


def equivariance_errors(
    fn: Callable[..., Sequence[Tensor | None]],
    args: Sequence,
    in_kinds: Sequence[Kind],
    out_kinds: Sequence[Kind],
    rotation: Tensor,
    translation: Tensor | None = None,
    kwargs: dict | None = None,
    kwarg_kinds: dict[str, Kind] | None = None,
) -> list[float]:
    """``max |f(g x) - g f(x)| / max |f(x)|`` for every output: ``nan`` for ``None`` outputs, ``inf``
    where either call gives a non-finite value.

    ``fn`` returns a sequence of outputs, a single tensor (one output), or a model's ``Return``
    (every degree it holds, ``type0, type1, type2...``); ``in_kinds`` has one kind per entry of
    ``args`` and ``out_kinds`` one per output, else ``ValueError``."""
    if len(in_kinds) != len(args):
        raise ValueError(f"in_kinds has {len(in_kinds)} kinds for {len(args)} args; give one per argument (None: untouched)")
    kwargs, kwarg_kinds = dict(kwargs or {}), dict(kwarg_kinds or {})
    base = _outputs(fn(*args, **kwargs), out_kinds)
    moved_args = [transform(a, k, rotation, translation) for a, k in zip(args, in_kinds)]
    moved_kwargs = {k: transform(v, kwarg_kinds.get(k), rotation, translation) for k, v in kwargs.items()}
    moved = _outputs(fn(*moved_args, **moved_kwargs), out_kinds)
    errors = []
    for y, y_moved, kind in zip(base, moved, out_kinds):
        if y is None:
            errors.append(float("nan"))
            continue
        if y_moved is None or not (torch.isfinite(y).all() and torch.isfinite(y_moved).all()):
            errors.append(float("inf"))
            continue
        expected = transform(y, kind, rotation, translation)
        scale = y.detach().abs().max().clamp(min=torch.finfo(y.dtype).tiny)
        errors.append(((y_moved - expected).detach().abs().max() / scale).item())
    return errors


def _outputs(value, out_kinds: Sequence[Kind]) -> list:
    """``fn``'s result as a list of outputs, as many as ``out_kinds``."""
    if isinstance(value, Tensor):
        outputs = [value]
    elif hasattr(value, "degrees"):  # a model's Return: (type0, type1) as a tuple, but all degrees
        outputs = [value.degrees[l] for l in sorted(value.degrees)]
    else:
        outputs = list(value)
    if len(outputs) != len(out_kinds):
        raise ValueError(f"fn returned {len(outputs)} outputs but out_kinds has {len(out_kinds)} kinds; give one per output")
    return outputs


def assert_equivariant(
    fn: Callable[..., Sequence[Tensor | None]],
    args: Sequence,
    in_kinds: Sequence[Kind],
    out_kinds: Sequence[Kind],
    *,
    reflect: bool = False,
    translate: bool = True,
    tolerance: float | None = None,
    generator: torch.Generator | None = None,
    kwargs: dict | None = None,
    kwarg_kinds: dict[str, Kind] | None = None,
) -> list[float]:
    """Check ``fn`` under a random rotation (a random mirror if ``reflect``) and translation.

    Raises ``AssertionError`` naming the output whose relative error exceeds the tolerance
    (``default_tolerance`` of the first floating-point input's dtype, which also sets the dtype
    of the random transformation, unless given); returns the errors.
    """
    tensors = [a for a in args if isinstance(a, Tensor) and a.is_floating_point()]
    dtype = tensors[0].dtype if tensors else torch.float64
    device = tensors[0].device if tensors else None
    make = random_reflection if reflect else random_rotation
    rotation = make(dtype, device, generator)
    translation = random_translation(dtype, device, generator) if translate else None
    errors = equivariance_errors(fn, args, in_kinds, out_kinds, rotation, translation, kwargs, kwarg_kinds)
    tol = tolerance if tolerance is not None else default_tolerance(dtype)
    for i, (err, kind) in enumerate(zip(errors, out_kinds)):
        if err == err and err > tol:  # nan: an absent output; inf (non-finite values) fails
            raise AssertionError(f"output {i} (kind {kind!r}) breaks equivariance: relative error {err:.3e} > {tol:.1e}")
    return errors


def randomize_parameters(module: torch.nn.Module, std: float = 0.1, generator: torch.Generator | None = None) -> None:
    """Move every parameter away from its initial value (zero-initialised output layers would
    otherwise make equivariance and masking tests pass trivially)."""
    with torch.no_grad():
        for p in module.parameters():
            noise = torch.randn(p.shape, dtype=torch.float64, generator=generator, device=_draw_device(generator))
            noise = noise.to(dtype=p.dtype, device=p.device)
            p.add_(std * noise)


__all__ = [
    "assert_equivariant",
    "default_tolerance",
    "equivariance_errors",
    "random_reflection",
    "random_rotation",
    "random_translation",
    "randomize_parameters",
    "transform",
]
