"""Whether a ``torch.func`` transform (grad, jacrev, hessian, vmap) is running.

The memory-saving paths (reversible backward, checkpointed edge chunks) hide the computation from
these transforms; under them the layers take the plain autograd path, same arithmetic, with
activations kept.
"""
from __future__ import annotations

import torch

# The neighbour search by distance reads values of tensors made inside the transform (top-k,
# nonzero, sizes).  functorch refuses that before torch 2.10 ("Cannot access data pointer of
# Tensor that doesn't have storage"): torch.func.grad and hessian of the model failed on 2.4.1,
# 2.5.1, 2.7.1 and 2.9.1 and passed on 2.10.0, 2.11.0 and 2.13.0 (tests/test_model_forces.py).
MIN_TORCH_FOR_DISTANCE_SEARCH_UNDER_TRANSFORMS = (2, 10)


def functorch_transform_active() -> bool:
    # private torch API, looked up defensively: where it is missing, no transform is assumed
    peek = getattr(getattr(torch._C, "_functorch", None), "peek_interpreter_stack", None)
    return peek is not None and peek() is not None


def torch_release(version: str | None = None) -> tuple[int, int]:
    """``(major, minor)`` of ``version`` (default: the running torch), e.g. ``"2.4.1+cu121"``."""
    major, minor = str(version or torch.__version__).split("+")[0].split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def check_distance_search_under_transforms(version: str | None = None) -> None:
    """A clear error instead of functorch's, when the search cannot run under a transform."""
    need = MIN_TORCH_FOR_DISTANCE_SEARCH_UNDER_TRANSFORMS
    if functorch_transform_active() and torch_release(version) < need:
        raise RuntimeError(
            f"torch.func transforms (grad, jacrev, hessian, vmap) of a model that finds neighbours by "
            f"distance (num_neighbors > 0) need torch >= {need[0]}.{need[1]}; this is torch "
            f"{version or torch.__version__}.  Use torch.autograd.grad for forces, or upgrade torch"
        )


__all__ = ["MIN_TORCH_FOR_DISTANCE_SEARCH_UNDER_TRANSFORMS", "check_distance_search_under_transforms", "functorch_transform_active", "torch_release"]
