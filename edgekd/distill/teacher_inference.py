"""A faster, numerically equivalent copy of a frozen teacher, for its forward pass on every distillation step.

Why: with augmentation the teacher runs on every step, and an unpruned teacher costs several student forwards.
A frozen eval-mode teacher can be rewritten for inference as ONNX Runtime would: BatchNorm folded into the
preceding convolution (``torch.fx.experimental.optimization.fuse``) and activations in ``channels_last``, the
layout oneDNN's CPU convolutions prefer. ``benchmarks/kd_step.py`` measures the gain (RESULTS.md, issue 7).

When it is not used: a loss hooks teacher modules by name (folding removes the BatchNorm modules and tracing
inlines blocks, so hooked names would vanish), the teacher is not ``torch.fx``-traceable, or the copy's
outputs differ from the teacher's by more than float rounding. The teacher then runs as it is.

Recipe (default on; off runs the teacher module unchanged)::

    distill: {fuse_teacher: false}
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import torch
from torch import nn

log = logging.getLogger("edgekd")

# BN folding reorders float operations: outputs move by rounding only, far below this.
TOLERANCE = 1e-4


class ChannelsLastInput(nn.Module):
    """Run ``module`` (weights already ``channels_last``) on a ``channels_last`` copy of a 4-D input."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.contiguous(memory_format=torch.channels_last))


def inference_copy(
    teacher: nn.Module,
    example: torch.Tensor,
    output: Callable[[object], torch.Tensor],
    name: str = "teacher",
) -> nn.Module | None:
    """A BN-folded, ``channels_last`` eval copy of ``teacher``, or ``None`` when it cannot be made faithfully.

    Args:
        teacher: the frozen teacher (left untouched).
        example: a real input batch; the copy must reproduce the teacher's output on it.
        output: picks the prediction tensor out of a model's output (``Task.output_tensor``).
        name: how log lines name the teacher.
    """
    from torch.fx.experimental.optimization import fuse

    if example.dim() != 4:
        return None
    try:
        fused = fuse(copy.deepcopy(teacher).eval())
    except Exception as exc:  # noqa: BLE001 - any tracing failure means: keep the teacher as it is
        log.info("%s: not traceable by torch.fx (%s); it runs unfused", name, str(exc).splitlines()[0][:200])
        return None
    fast = ChannelsLastInput(fused.to(memory_format=torch.channels_last)).eval().requires_grad_(False)
    with torch.inference_mode():
        ref, got = output(teacher.eval()(example)), output(fast(example))
    if ref.shape != got.shape:
        return None
    scale = float(ref.abs().max()) or 1.0
    diff = float((ref - got).abs().max()) / scale
    if not diff <= TOLERANCE:
        log.info("%s: folded copy differs by %.1e (relative); it runs unfused", name, diff)
        return None
    return fast
