"""Whether a ``torch.func`` transform (grad, jacrev, hessian, vmap) is running.

The memory-saving paths (reversible backward, checkpointed edge chunks) hide the computation from
these transforms; under them the layers take the plain autograd path, same arithmetic, with
activations kept.
"""
from __future__ import annotations

import torch


def functorch_transform_active() -> bool:
    # private torch API, looked up defensively: where it is missing, no transform is assumed
    peek = getattr(getattr(torch._C, "_functorch", None), "peek_interpreter_stack", None)
    return peek is not None and peek() is not None


__all__ = ["functorch_transform_active"]
