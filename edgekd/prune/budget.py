"""What a channel allocation costs, layer by layer: MACs, parameters, or predicted latency on a target.

Why analytic and per layer: the allocator (:mod:`edgekd.prune.allocate`) asks "what does removing these channels
of this group save?" thousands of times. Pruning a copy and counting it (what the uniform search does) costs
seconds per question on DenseNet-121; a layer's MACs and parameters are closed forms of its input and output
channels and the spatial sizes recorded once with forward hooks, and a latency model answers in microseconds.
A group's saving is then the change of the few layers its channels touch (NetAdapt, Yang et al., ECCV'18, and
HALP, Shen et al., NeurIPS'22, both cost a step by the layers it changes, from a per-layer table).

The counts follow :func:`edgekd.models.complexity.count_complexity` (fvcore): a conv or linear layer counts its
multiply-accumulates, a norm layer one or more operations per output element; ops without channels (pooling)
are left to the allocator's final check with that counter.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from edgekd.prune.layers import width

log = logging.getLogger("edgekd")

NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.PReLU)


@dataclass(frozen=True)
class LayerShape:
    """One layer whose cost depends on channel counts, as it ran on the example input.

    Attributes:
        name: module name in the model.
        kind: ``conv``, ``depthwise`` (groups == in == out: one width), ``grouped``, ``linear``, ``norm``.
        cin, cout: unpruned input and output channels (a norm layer: ``cin == cout``, its channels).
        kernel: kernel area (1 for linear and norms).
        groups: conv groups (1 otherwise).
        out_area: output positions per channel: ``H_out * W_out`` (linear: rows of the batch-1 input).
        bias: a conv/linear layer has a bias.
        per_element: a norm's counted operations per output element (fvcore: BatchNorm in eval 2 with an affine
            pair, else 1; GroupNorm/LayerNorm 5 or 4; PReLU 0).
        channel_params: a norm's parameters per channel (an affine pair 2, PReLU 1).
    """

    name: str
    kind: str
    cin: int
    cout: int
    kernel: int = 1
    groups: int = 1
    out_area: int = 1
    bias: bool = False
    per_element: int = 1
    channel_params: int = 0

    def macs(self, cin: int, cout: int) -> float:
        """fvcore's count at these widths: MACs of conv/linear, ``per_element`` ops per output of a norm."""
        if self.kind == "depthwise":
            return float(cout * self.kernel * self.out_area)
        if self.kind == "norm":
            return float(cout * self.out_area * self.per_element)
        return float(
            cout * (cin // self.groups if self.kind == "grouped" else cin) * self.kernel * self.out_area
        )

    def params(self, cin: int, cout: int) -> float:
        if self.kind == "norm":
            return float(self.channel_params * cout)
        bias = cout if self.bias else 0
        if self.kind == "depthwise":
            return float(cout * self.kernel + bias)
        fan_in = cin // self.groups if self.kind == "grouped" else cin
        return float(cout * fan_in * self.kernel + bias)


def record_shapes(model: nn.Module, example: torch.Tensor) -> dict[str, LayerShape]:
    """``{module name: LayerShape}`` of every conv, linear and norm layer ``model`` runs on ``example``.

    A module called more than once keeps its first call (a shared layer's widths are one set of channels).
    """
    shapes: dict[str, LayerShape] = {}
    names = {id(m): n for n, m in model.named_modules()}

    def hook(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        name = names[id(module)]
        if name not in shapes and isinstance(output, torch.Tensor):
            shapes[name] = _shape(name, module, output)

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear, *NORMS))
    ]
    try:
        with torch.no_grad():
            model.eval()(example[:1])
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def _shape(name: str, module: nn.Module, output: torch.Tensor) -> LayerShape:
    if isinstance(module, nn.modules.conv._ConvNd):
        cin, cout, groups = module.in_channels, module.out_channels, module.groups
        kind = "conv" if groups == 1 else "depthwise" if groups == cin == cout else "grouped"
        return LayerShape(
            name,
            kind,
            cin,
            cout,
            kernel=math.prod(module.kernel_size),
            groups=groups,
            out_area=math.prod(output.shape[2:]),
            bias=module.bias is not None,
        )
    if isinstance(module, nn.Linear):
        rows = math.prod(output.shape[:-1])
        return LayerShape(
            name,
            "linear",
            module.in_features,
            module.out_features,
            out_area=rows,
            bias=module.bias is not None,
        )
    channels = width(module) or 0
    area = output.numel() // max(channels, 1)
    if isinstance(module, nn.PReLU):  # one parameter per channel, no counted operations
        return LayerShape(name, "norm", channels, channels, out_area=area, per_element=0, channel_params=1)
    affine = getattr(module, "weight", None) is not None
    batchnorm = isinstance(module, nn.modules.batchnorm._BatchNorm)
    per_element = (
        (2 if affine else 1) if batchnorm else (5 if affine else 4)
    )  # fvcore's group/layer-norm guess
    pairs = 2 if affine else 0
    return LayerShape(
        name, "norm", channels, channels, out_area=area, per_element=per_element, channel_params=pairs
    )


class Cost(Protocol):
    """A cost the allocator spends: a sum of per-layer terms, then a whole-model transform.

    ``total(sum of layer(i, cin, cout))`` is the model's cost; ``total`` must be increasing (the allocator
    compares layer sums against a goal mapped back through it with :meth:`layer_sum_for`).
    """

    name: str

    def layer(self, index: int, cin: int, cout: int) -> float: ...

    def total(self, layer_sum: float) -> float: ...

    def layer_sum_for(self, total: float) -> float: ...


@dataclass(frozen=True)
class CountCost:
    """MACs (fvcore's count) or parameters, as closed forms of each layer's widths."""

    name: str  # "macs" | "params"
    layers: tuple[LayerShape, ...]
    residual: float = 0.0  # what the layers leave out (pooling, unrecorded ops), from the real counter

    def layer(self, index: int, cin: int, cout: int) -> float:
        shape = self.layers[index]
        return shape.macs(cin, cout) if self.name == "macs" else shape.params(cin, cout)

    def total(self, layer_sum: float) -> float:
        return layer_sum + self.residual

    def layer_sum_for(self, total: float) -> float:
        return total - self.residual


class LatencyCost:
    """Predicted p50 (ms) from a target's latency model: the sum of its layers' costs plus ``beta``.

    Each recorded conv/linear layer is matched to its ONNX layer (:func:`match_onnx_layers`); layers the
    export does not have (norms: folded into the convs) cost nothing, and ONNX layers no module matched are
    a constant at their unpruned widths. A layer's cost (:meth:`~edgekd.latency.LatencyModel.layer_cost`) is its
    scaled term plus the reorders a width off the SIMD block costs around it, so the allocator sees that a
    misaligned width is slow. Layer costs are memoised: the greedy asks the same widths often.
    """

    name = "latency"

    def __init__(self, model: object, layers: Sequence[LayerShape]) -> None:
        self.model = model  # edgekd.latency.LatencyModel
        self.onnx_index = match_onnx_layers(layers, model.layers)  # type: ignore[attr-defined]
        matched = {j for j in self.onnx_index if j is not None}
        lost = [
            s.name for s, j in zip(layers, self.onnx_index, strict=True) if j is None and s.kind != "norm"
        ]
        if lost:
            log.warning(
                "prune: %d layer(s) have no counterpart in the latency model (%s); their time is not allocated",
                len(lost),
                ", ".join(lost[:3]),
            )
        self.constant = sum(
            model.layer_cost(j, spec.cin, spec.cout)  # type: ignore[attr-defined]
            for j, spec in enumerate(model.layers)  # type: ignore[attr-defined]
            if j not in matched
        )
        self._memo: dict[tuple[int, int, int], float] = {}

    def layer(self, index: int, cin: int, cout: int) -> float:
        j = self.onnx_index[index]
        if j is None:
            return 0.0
        key = (j, cin, cout)
        if key not in self._memo:
            self._memo[key] = self.model.layer_cost(j, cin, cout)  # type: ignore[attr-defined]
        return self._memo[key]

    def total(self, layer_sum: float) -> float:
        return layer_sum + self.constant + self.model.beta  # type: ignore[attr-defined]

    def layer_sum_for(self, total: float) -> float:
        return total - self.model.beta - self.constant  # type: ignore[attr-defined]


def _signature(kind: str, cin: int, cout: int, kernel: int, area: int) -> tuple:
    kind = "conv" if kind == "grouped" else kind
    return (kind, cin, cout, kernel, area)


def match_onnx_layers(layers: Sequence[LayerShape], specs: Sequence[object]) -> list[int | None]:
    """For each recorded layer, the index of its ONNX layer (:class:`edgekd.latency.LayerSpec`), or ``None``.

    Matched by what both sides know (kind, widths, kernel area, output positions), in order within each
    signature: the export writes layers in the order the forward pass ran them, so the k-th ResNet block conv
    of a shape is the k-th ONNX conv of that shape even where branches interleave differently.
    """
    queues: dict[tuple, list[int]] = {}
    for j, spec in enumerate(specs):
        kh, kw = spec.kernel  # type: ignore[attr-defined]
        area = spec.out_hw[0] * spec.out_hw[1]  # type: ignore[attr-defined]
        key = _signature(spec.kind, spec.cin, spec.cout, kh * kw, area)  # type: ignore[attr-defined]
        queues.setdefault(key, []).append(j)
    found: list[int | None] = []
    for shape in layers:
        if shape.kind == "norm":
            found.append(None)
            continue
        queue = queues.get(_signature(shape.kind, shape.cin, shape.cout, shape.kernel, shape.out_area), [])
        found.append(queue.pop(0) if queue else None)
    return found
