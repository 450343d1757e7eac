"""Tensors kept in module-level caches must be plain, even when first built under ``torch.func``."""
from __future__ import annotations

import contextlib

import torch


def outside_transforms() -> contextlib.AbstractContextManager:
    """Context in which new tensors are plain even inside a ``torch.func`` transform.  A cached
    constant first built inside one (``hessian``, ``jacrev``) came out wrapped for that call and
    poisoned every later call ("escaped" internal assert in the second ``hessian``)."""
    disable = getattr(torch._C, "_DisableFuncTorch", None)  # private torch API, looked up defensively
    return disable() if disable is not None else contextlib.nullcontext()


__all__ = ["outside_transforms"]
