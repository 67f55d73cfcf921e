"""BatchNorm over the global batch when training data-parallel on the CPU (gloo).

Why: in training mode a BatchNorm layer normalises with its batch's mean and variance. With N ranks each
holding 1/N of the batch, plain BN would normalise with per-rank statistics, so an N-rank run would train a
different model from a one-process run of the same recipe. ``torch.nn.SyncBatchNorm`` fixes that, but only
for GPU tensors. Here each layer all-reduces its per-channel sums (forward) and gradient sums (backward) over
a process group of its own, so a step on N ranks computes the single-process step up to float rounding, and
the running statistics (hence the evaluated and exported model) are the single-process ones too.

Why the modules are kept and only their ``forward`` is routed: ``student.pt`` records every module's class to
rebuild the pruned architecture without pickled code, so converting layers to another class would change
the saved model. The routing is undone when training ends, and outside training mode (or in one process)
the layers run their own forward.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from edgekd.engine.distributed import collective_timeout


class _GlobalBatchNorm(torch.autograd.Function):
    """Batch normalisation with statistics (and their gradients) summed over every rank of ``group``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        running_mean: torch.Tensor | None,
        running_var: torch.Tensor | None,
        eps: float,
        momentum: float,
        group: Any,
    ) -> torch.Tensor:
        channels, dims = x.shape[1], [0, *range(2, x.dim())]
        shape = [1, channels] + [1] * (x.dim() - 2)
        wide = x.double()  # sums of squares in float64, as the CPU BatchNorm kernel accumulates
        stats = torch.cat([wide.sum(dims), (wide * wide).sum(dims), wide.new_tensor([x.numel() / channels])])
        dist.all_reduce(stats, group=group)
        count = float(stats[-1])
        mean = stats[:channels] / count
        var = (stats[channels : 2 * channels] / count - mean * mean).clamp_min(0.0)
        if running_mean is not None and running_var is not None:
            unbiased = var * (count / max(1.0, count - 1.0))
            running_mean.mul_(1.0 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
            running_var.mul_(1.0 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
        invstd = (var + eps).rsqrt()
        xhat = ((wide - mean.view(shape)) * invstd.view(shape)).to(x.dtype)
        ctx.save_for_backward(xhat, weight, invstd.to(x.dtype))
        ctx.count, ctx.group = count, group
        if weight is None:
            return xhat
        return xhat * weight.view(shape) + bias.view(shape)  # type: ignore[union-attr]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        xhat, weight, invstd = ctx.saved_tensors
        channels, dims = grad.shape[1], [0, *range(2, grad.dim())]
        shape = [1, channels] + [1] * (grad.dim() - 2)
        sum_dy, sum_dy_xhat = grad.sum(dims), (grad * xhat).sum(dims)
        # this rank's parameter gradients: DDP averages them over ranks like every other parameter's
        grad_weight = sum_dy_xhat if weight is not None else None
        grad_bias = sum_dy if weight is not None else None
        both = torch.cat([sum_dy, sum_dy_xhat]).double()
        dist.all_reduce(both, group=ctx.group)
        mean_dy = (both[:channels] / ctx.count).to(grad.dtype)
        mean_dy_xhat = (both[channels:] / ctx.count).to(grad.dtype)
        scale = invstd if weight is None else weight * invstd
        grad_x = (grad - mean_dy.view(shape) - xhat * mean_dy_xhat.view(shape)) * scale.view(shape)
        return grad_x, grad_weight, grad_bias, None, None, None, None, None


def _global_forward(self: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """A BatchNorm layer's forward with global-batch statistics while training (see the module docstring)."""
    group = getattr(self, "_edgekd_sync_group", None)
    if not self.training or group is None or not dist.is_initialized():
        return type(self).forward(self, x)
    self._check_input_dim(x)
    momentum = 0.0 if self.momentum is None else self.momentum
    if self.track_running_stats and self.num_batches_tracked is not None:
        self.num_batches_tracked.add_(1)
        if self.momentum is None:  # cumulative moving average, as nn.BatchNorm does
            momentum = 1.0 / float(self.num_batches_tracked)
    return _GlobalBatchNorm.apply(
        x, self.weight, self.bias, self.running_mean, self.running_var, self.eps, momentum, group
    )


def sync_batchnorm(*modules: nn.Module | None) -> Callable[[], None]:
    """Make every BatchNorm layer in ``modules`` normalise over the global batch; return the undo function.

    Call it on every rank at the same point (it creates a process group, a collective). In one process it
    changes nothing.
    """
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return lambda: None
    group = dist.new_group(backend=dist.get_backend(), timeout=collective_timeout())
    layers = [
        layer
        for module in modules
        if module is not None
        for layer in module.modules()
        if isinstance(layer, _BatchNorm) and not isinstance(layer, nn.SyncBatchNorm)
    ]
    for layer in layers:
        layer._edgekd_sync_group = group  # type: ignore[attr-defined]
        layer.forward = types.MethodType(_global_forward, layer)  # type: ignore[method-assign]

    def undo() -> None:
        for layer in layers:
            vars(layer).pop("forward", None)
            vars(layer).pop("_edgekd_sync_group", None)
        dist.destroy_process_group(group)

    return undo
