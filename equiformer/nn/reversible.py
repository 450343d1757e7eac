"""Residual blocks, plain or reversible (RevNet, Gomez et al. 2017).

Reversible: two streams start as copies of the input, ``y1 = x1 + attn(x2)``,
``y2 = x2 + ff(y1)``, output ``(y1 + y2) / 2``.  The forward keeps no activations; the backward
rebuilds each block's inputs from its outputs (``x2 = y2 - ff(y1)``, ``x1 = y1 - attn(x2)``) and
recomputes it, so activation memory does not grow with depth.  Parameters and the geometry are
explicit inputs of the autograd function, so ``torch.autograd.grad`` and forces work as usual.
A backward that must itself be differentiable (``create_graph=True``, e.g. a loss on forces)
runs the blocks again with autograd recording: correct second derivatives, but that backward
keeps every block's activations, as plain blocks do.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .edge_geometry import EdgeGeometry
from ..transforms import functorch_transform_active


class _Runner:
    """What the autograd function needs to call the blocks."""

    def __init__(self, blocks: nn.ModuleList, geometry: EdgeGeometry):
        self.blocks, self.geometry = list(blocks), geometry  # a plain list: cheap indexing
        self.param_slices: list[dict[str, slice]] = []  # per block, where its parts' parameters are

    def trainable_parameters(self) -> list[Tensor]:
        """Every block's trainable parameters, ``attn`` then ``ff`` per block, recording where
        each part's run is: the memory-saving backward reads them back from that list, so it
        pairs each gradient with the very tensor the forward was handed."""
        params: list[Tensor] = []
        self.param_slices = []
        for block in self.blocks:
            slices = {}
            for part in ("attn", "ff"):
                found = block.trainable(part)
                slices[part] = slice(len(params), len(params) + len(found))
                params += found
            self.param_slices.append(slices)
        return params

    def attn(self, i: int, x: Tensor, geometry: EdgeGeometry) -> Tensor:
        return self.blocks[i].attn(x, geometry)

    def ff(self, i: int, x: Tensor) -> Tensor:
        return self.blocks[i].ff(x)

    def run(self, x1: Tensor, x2: Tensor, geometry: EdgeGeometry) -> tuple[Tensor, Tensor]:
        """Both streams through every block: ``y1 = x1 + attn(x2)``, ``y2 = x2 + ff(y1)``."""
        for i in range(len(self.blocks)):
            x1 = x1 + self.attn(i, x2, geometry)
            x2 = x2 + self.ff(i, x1)
        return x1, x2


class _ReversibleFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, runner: _Runner, num_geometry: int, x1: Tensor, x2: Tensor, *tensors: Tensor):
        # the inputs (one (N, F) tensor, passed as both streams) are kept for a backward that
        # must itself be differentiable; the memory-saving backward rebuilds them from the outputs
        inputs = (x1, x2)
        with torch.no_grad():
            x1, x2 = runner.run(x1, x2, runner.geometry)
        ctx.runner, ctx.num_geometry = runner, num_geometry
        # the backward recomputes the blocks: it must run under the same autocast as this forward
        device = x1.device.type
        ctx.autocast = (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        ctx.save_for_backward(x1, x2, *inputs, *tensors[:num_geometry])
        ctx.params = tensors[num_geometry:]
        return x1, x2

    @staticmethod
    def backward(ctx, dy1: Tensor, dy2: Tensor):
        device, enabled, dtype = ctx.autocast
        with torch.autocast(device, dtype=dtype, enabled=enabled):
            if torch.is_grad_enabled():  # create_graph=True, e.g. a loss on forces
                return _differentiable_backward(ctx, dy1, dy2)
            return _recompute_backward(ctx, dy1, dy2)


def _differentiable_backward(ctx, dy1: Tensor, dy2: Tensor) -> tuple:
    """Gradients that are themselves differentiable (double backward): the blocks are run again
    from the saved inputs with autograd recording, as plain residual blocks would be, so this
    backward keeps every block's activations."""
    runner = ctx.runner
    _, _, x1, x2, *geo = ctx.saved_tensors
    params = ctx.params
    # the function's inputs as fresh views, so that each gets its partial derivative: the two
    # streams are one tensor, and geometry tensors depend on one another (the Wigner blocks come
    # from one recursion); gradients with respect to the tensors themselves would add those paths
    a, b = x1.view_as(x1), x2.view_as(x2)
    geo = [t.view_as(t) for t in geo]
    y1, y2 = runner.run(a, b, runner.geometry.with_float_tensors(geo))
    inputs = [a, b, *geo, *params]
    wanted = [k for k, t in enumerate(inputs) if t.requires_grad]
    grads: list[Tensor | None] = [None] * len(inputs)
    found = torch.autograd.grad((y1, y2), [inputs[k] for k in wanted], (dy1, dy2), create_graph=True, allow_unused=True)
    for k, g in zip(wanted, found):
        grads[k] = g
    return (None, None, *grads)


def _recompute_backward(ctx, dy1: Tensor, dy2: Tensor) -> tuple:
    """Walk the blocks backwards, rebuilding each block's inputs from its outputs."""
    runner = ctx.runner
    y1, y2, _, _, *geo = ctx.saved_tensors
    params = ctx.params
    geo_leaves = [t.detach().requires_grad_(t.requires_grad) for t in geo]
    used_geo = [t for t in geo_leaves if t.requires_grad]
    geo_grads = [torch.zeros_like(t) if t.requires_grad else None for t in geo]
    param_grads: list[Tensor | None] = [None] * len(params)

    def differentiate(out: Tensor, leading: list[Tensor], part: slice, grad: Tensor) -> tuple:
        """Gradients of ``out`` for ``leading`` (returned) and for the parameters the forward
        listed in ``part`` (stored); one frozen since the forward gets none, as in plain autograd."""
        live = [k for k in range(part.start, part.stop) if params[k].requires_grad]
        found = torch.autograd.grad(out, [*leading, *(params[k] for k in live)], grad, allow_unused=True)
        for k, g in zip(live, found[len(leading) :]):
            param_grads[k] = g
        return found[: len(leading)]

    # the cached rotation blocks of a geometry view belong to the graph of one autograd.grad
    # call, which frees that graph when it returns: a fresh view per block when the frames need
    # gradients (forces), else one view (and one set of blocks) for all
    frames_need_grad = any(t.requires_grad for t in geo_leaves[2:])  # after weight, edge_attr
    shared_geometry = None if frames_need_grad else runner.geometry.with_float_tensors(geo_leaves)
    for i in reversed(range(len(runner.blocks))):
        parts = runner.param_slices[i]
        with torch.enable_grad():
            z1 = y1.detach().requires_grad_()
            g_out = runner.ff(i, z1)
            (dz1,) = differentiate(g_out, [z1], parts["ff"], dy2)
        with torch.no_grad():
            x2 = y2 - g_out
            dx1 = dy1 + dz1
        geometry = shared_geometry if shared_geometry is not None else runner.geometry.with_float_tensors(geo_leaves)
        with torch.enable_grad():
            z2 = x2.detach().requires_grad_()
            f_out = runner.attn(i, z2, geometry)
            dz2, *geo_part = differentiate(f_out, [z2, *used_geo], parts["attn"], dx1)
        with torch.no_grad():
            x1 = y1 - f_out
            dx2 = dy2 + dz2
            geo_part = iter(geo_part)
            for j, t in enumerate(geo_leaves):
                if t.requires_grad:
                    g = next(geo_part)
                    if g is not None:
                        geo_grads[j] += g
        y1, y2, dy1, dy2 = x1, x2, dx1, dx2
    return (None, None, dy1, dy2, *geo_grads, *param_grads)


class Block(nn.Module):
    def __init__(self, attn: nn.Module, ff: nn.Module):
        super().__init__()
        self.attn, self.ff = attn, ff
        # plain lists (not registered): the submodules, walked once here instead of by
        # ``parameters()`` on every call (that walk was 4.4 % of a 16-node training step, cProfile)
        self._submodules = {"attn": list(attn.modules()), "ff": list(ff.modules())}

    def trainable(self, part: str) -> list[Tensor]:
        """The parameters of ``attn`` or ``ff`` that require gradients, read afresh from each
        submodule (so a replaced or frozen parameter is seen)."""
        found = (p for m in self._submodules[part] for p in m._parameters.values())
        return list(dict.fromkeys(p for p in found if p is not None and p.requires_grad))  # shared ones once


class BlockSequence(nn.Module):
    """``depth`` blocks of attention + feed-forward, residual or reversible.

    ``memory_saving``: for reversible blocks, whether to use the activation-free backward (True)
    or plain autograd through the same arithmetic (False; used to check the gradients).
    """

    def __init__(self, blocks: list[Block], reversible: bool = False):
        super().__init__()
        self.blocks, self.reversible = nn.ModuleList(blocks), reversible
        self.memory_saving = True

    def forward(self, x: Tensor, geometry: EdgeGeometry) -> Tensor:
        """Flat features ``(N, F) -> (N, F)``."""
        if not self.reversible:
            for block in self.blocks:
                x = x + block.attn(x, geometry)
                x = x + block.ff(x)
            return x
        runner = _Runner(self.blocks, geometry)
        if self.memory_saving and torch.is_grad_enabled() and not functorch_transform_active():
            geo = geometry.float_tensors()
            params = runner.trainable_parameters()
            y1, y2 = _ReversibleFunction.apply(runner, len(geo), x, x, *geo, *params)
        else:
            y1, y2 = runner.run(x, x, geometry)
        return (y1 + y2) / 2
