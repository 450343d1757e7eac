"""Non-persistent float constants that stay exact through dtype conversions."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class ExactConstants(nn.Module):
    """Base for modules with computed float constants (scales, averaging weights, grid points).

    Such a buffer made in float32 and later converted with ``.double()`` keeps its float32
    rounding (1e-8 relative), and ``load_state_dict`` cannot repair it (it is not saved).  The
    float64 value is kept aside, and every conversion (``.to``, ``.double``, ``.cuda``...) sets the
    buffer from it in the buffer's new dtype and device."""

    def register_constant(self, name: str, value: Tensor) -> None:
        exact = value.detach().to(torch.float64)
        self.__dict__.setdefault("_exact_constants", {})[name] = exact
        self.register_buffer(name, exact.to(torch.get_default_dtype()), persistent=False)

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        for name, exact in self.__dict__.get("_exact_constants", {}).items():
            converted = self._buffers[name]
            self._buffers[name] = exact.to(device=converted.device, dtype=converted.dtype)
        return self


__all__ = ["ExactConstants"]
