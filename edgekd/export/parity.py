"""The parity gate: does the ONNX file compute what the PyTorch model computes, on real inputs?

Why real eval inputs and two numbers: random inputs miss the failure that matters most for traced exports — a
branch on tensor values baked in for the tracing example — and they sit outside the value range BatchNorm
folding and activation clipping see in deployment. ``max_abs_diff`` catches numeric drift; ``agreement``
(top-1 for classification, per pixel for segmentation) says whether the drift changes predictions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from edgekd.data.base import DataBundle
from edgekd.results import Parity
from edgekd.tasks.base import Task

Predict = Callable[[torch.Tensor], torch.Tensor]


def parity_batches(data: DataBundle, samples: int, batch_size: int = 256) -> Iterator[torch.Tensor]:
    """The first ``samples`` eval images (all of them if the split is smaller), normalised, in batches."""
    loader = data.eval_loader(min(batch_size, samples))
    remaining = samples
    for images, _ in loader:
        if remaining <= 0:
            return
        yield images[:remaining]
        remaining -= len(images)


def measure_parity(
    model: nn.Module,
    candidate: Predict,
    data: DataBundle,
    task: Task,
    samples: int,
    atol: float,
    min_agreement: float,
) -> Parity:
    """Compare ``model`` (eval mode, inference_mode) with ``candidate`` on the first ``samples`` eval inputs.

    Args:
        model: The PyTorch reference; its training flag is restored afterwards.
        candidate: Maps an input batch to the prediction tensor (an ORT session wrapper).
        data: Supplies the eval inputs.
        task: Picks the prediction tensor out of the model's output and defines agreement.
        samples: How many eval inputs to compare.
        atol: Largest accepted ``max |PyTorch - candidate|``.
        min_agreement: Smallest accepted prediction agreement.

    Returns:
        :class:`~edgekd.results.Parity`; ``passed`` iff both limits hold (a NaN anywhere fails).
    """
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    references, candidates = [], []
    max_diff = 0.0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for images in parity_batches(data, samples):
                ref = task.output_tensor(model(images.to(device))).float().cpu()
                cand = candidate(images).float().cpu()
                if ref.shape != cand.shape:
                    return Parity(float("inf"), 0.0, False, len(images))
                max_diff = max(max_diff, float((ref - cand).abs().max()))
                if ref.isnan().any() or cand.isnan().any():
                    max_diff = float("nan")
                references.append(ref)
                candidates.append(cand)
    finally:
        model.train(was_training)
    count = sum(len(r) for r in references)
    agreement = task.agreement(torch.cat(references), torch.cat(candidates))
    passed = max_diff <= atol and agreement >= min_agreement  # False for NaN
    return Parity(max_abs_diff=max_diff, agreement=agreement, passed=passed, samples=count)


def parity_failure(name: str, parity: Parity, atol: float, min_agreement: float) -> str:
    """The one-line GateError message: the numbers, the limits, and what to look at."""
    return (
        f"{name}: PyTorch/ONNX Runtime parity failed on {parity.samples} eval inputs: "
        f"max_abs_diff {parity.max_abs_diff:.3g} (limit export.parity_atol={atol:g}), "
        f"agreement {parity.agreement:.4f} (limit export.parity_min_agreement={min_agreement:g}); "
        "the exported graph differs from the model (look for branches on tensor values or "
        "torch.onnx.is_in_onnx_export() in forward); the file was not written"
    )
