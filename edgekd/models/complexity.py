"""The one MACs/params counter used everywhere (pruning targets, report, benchmarks).

fvcore's ``FlopCountAnalysis`` traces the model and counts one fused multiply-add as one "flop", i.e. it reports
MACs of convolutions, linear layers and matmuls (elementwise ops, BN and activations are not counted, as is
customary in the pruning literature). Using one counter keeps "MACs reduction" comparable across stages.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Complexity:
    macs: int
    params: int


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_complexity(model: nn.Module, example_input: torch.Tensor) -> Complexity:
    """MACs for one forward pass of ``example_input`` (use batch 1) and the parameter count."""
    # fvcore.nn scripts its focal loss at import, and torch warns that jit.script is deprecated: not our call.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    was_training = model.training
    model.eval()
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            analysis = FlopCountAnalysis(model, example_input)
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            macs = int(analysis.total())
    finally:
        model.train(was_training)
    return Complexity(macs=macs, params=count_params(model))
