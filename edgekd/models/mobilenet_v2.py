"""MobileNetV2 (Sandler, Howard, Zhu, Zhmoginov & Chen, CVPR 2018, arXiv:1801.04381) with a width multiplier,
for small inputs and any number of outputs (class logits or regression values).

This is torchvision's ``mobilenet_v2`` (inverted residuals, linear bottlenecks, ReLU6), not a re-implementation:
the builder only adapts it. ``width_mult`` scales every layer's channels (rounded to multiples of 8) as in the
paper; the gaze thesis (001) compared 1.0, 0.5 and 0.25 students, which all share one module tree, so FitNets
hints can name the same ``features.<i>`` modules in teacher and student. Adaptations:

* the stem takes ``in_channels`` (grey eye crops have one);
* ``stem_stride: 1`` keeps 4× more resolution for tiny inputs (32×32, 36×60) at ~3–4× the MACs; the default 2
  is the paper's (36×60 ends at a 2×2 map);
* ``dropout`` before the head (torchvision's default 0.2; regression heads usually want 0);
* parameters in ``channels_last`` memory format, because PyTorch's CPU depthwise convolutions train about twice
  as fast in it (the outputs and the exported ONNX graph are the same).

The output head is ``classifier.1`` (an ``nn.Linear``), found and kept by pruning like any head.

Recipe::

    teacher: {model: {name: mobilenet_v2, args: {width_mult: 1.0, dropout: 0.0}}}
    # hooks for fitnet: features.3 (24·w ch, stride 4), features.6 (32·w, 8), features.13 (96·w, 16)
"""

from __future__ import annotations

from torch import nn

from edgekd.errors import InputError
from edgekd.models import MODELS
from edgekd.models.build import adapt_input_channels


@MODELS.register("mobilenet_v2")
def mobilenet_v2(
    num_classes: int = 1000,
    in_channels: int = 3,
    width_mult: float = 1.0,
    stem_stride: int = 2,
    dropout: float = 0.2,
    channels_last: bool = True,
) -> nn.Module:
    """torchvision's MobileNetV2 with ``width_mult``, ``in_channels`` inputs and ``num_classes`` outputs.

    Args:
        num_classes: outputs of the head (classes, or regression values such as gaze pitch and yaw).
        in_channels: input image channels.
        width_mult: channel multiplier (paper: 0.35–1.4; the gaze thesis: 1.0, 0.5, 0.25).
        stem_stride: 2 (paper) or 1 (small inputs: a 4× larger feature map everywhere).
        dropout: dropout probability before the head.
        channels_last: store parameters in channels-last memory format (faster CPU training).

    Raises:
        InputError: a width multiplier <= 0, a stem stride other than 1 or 2, or dropout outside [0, 1).
    """
    import torch
    import torchvision

    if not width_mult > 0:
        raise InputError(
            f"teacher.model.args.width_mult: must be > 0 (e.g. 1.0, 0.5, 0.25), got {width_mult}"
        )
    if stem_stride not in (1, 2):
        raise InputError(f"teacher.model.args.stem_stride: must be 1 or 2, got {stem_stride}")
    if not 0 <= dropout < 1:
        raise InputError(f"teacher.model.args.dropout: must be in [0, 1), got {dropout}")
    model = torchvision.models.mobilenet_v2(num_classes=num_classes, width_mult=width_mult, dropout=dropout)
    if in_channels != 3:
        adapt_input_channels(model, in_channels)
    model.features[0][0].stride = (stem_stride, stem_stride)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
