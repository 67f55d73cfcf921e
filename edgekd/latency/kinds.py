"""Operator kinds of the latency model: how one kind is built as a micro-model, sampled and described.

A kind (``conv``, ``depthwise``, ``grouped``, ``linear``) answers three questions, so adding one (attention
projections, 1-D convs) is one class and one decorator line:

* :meth:`OpKind.micro`: the layer as a single-op ONNX model (built with ``onnx.helper``: no torch, fast), with
  the ops ORT fuses into it, at its real input size; timed by the probe in one ``--bundle``;
* :meth:`OpKind.grid`: the ``(cin, cout)`` pairs to time: aligned widths (multiples of 8) and a few odd ones,
  because a width off the SIMD block can switch ORT to another kernel (measured on this AVX2 CPU: a 3x3
  depthwise layer at 47 or 63 channels ran 2.5-3x slower than at 48 or 64; NetAdapt, ECCV'18, and HALP,
  NeurIPS'22, both stress that latency is not monotone in width);
* :meth:`OpKind.features`: the regression features of a width pair: MACs, activation sizes (memory
  traffic), and the same terms switched on when a width is off the alignment ``q`` (a different kernel).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from edgekd.latency.graph import LayerSpec
from edgekd.registry import Registry

OPSET = 17  # edgekd's export opset (edgekd.recipe.schema.ExportConfig.opset's default)
OP_KINDS: Registry[type[OpKind]] = Registry("latency operator kind")


@dataclass(frozen=True)
class GridSize:
    """How densely :meth:`OpKind.grid` samples: ``ratios`` of the full width (aligned to 8), ``odd`` off it."""

    ratios: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)
    odd: tuple[float, ...] = (0.9, 0.6, 0.35)


QUICK_GRID = GridSize(ratios=(1.0, 0.5, 0.25), odd=(0.8, 0.4))


def aligned_widths(full: int, size: GridSize) -> list[int]:
    """Multiples of 8 at ``size.ratios`` of ``full`` (``full`` itself always), distinct, descending."""
    out = {full}
    for r in size.ratios:
        out.add(max(8, int(round(full * r / 8)) * 8) if full >= 8 else max(1, int(round(full * r))))
    return sorted((w for w in out if 1 <= w <= full), reverse=True)


def odd_widths(full: int, size: GridSize) -> list[int]:
    """Widths off every multiple of 4 at ``size.odd`` of ``full``: what an unrounded pruner leaves."""
    out = set()
    for r in size.odd:
        w = max(1, int(round(full * r)))
        w = w if w % 4 else max(1, w - 1)
        if w < full:
            out.add(w)
    return sorted(out, reverse=True)


class OpKind(ABC):
    """One operator kind; subclasses are registered in :data:`OP_KINDS` under their ``name``."""

    name = "kind"

    @abstractmethod
    def features(self, layer: LayerSpec, q: int) -> list[float]:
        """Regression features of ``layer`` at its widths, with ``q`` the alignment whose miss is modelled."""

    def grid(self, layer: LayerSpec, size: GridSize) -> list[tuple[int, int]]:
        """``(cin, cout)`` pairs to time: aligned x aligned, then odd outputs, odd inputs and both odd."""
        ins = [layer.cin] if layer.fixed_in else aligned_widths(layer.cin, size)
        outs = [layer.cout] if layer.fixed_out else aligned_widths(layer.cout, size)
        odd_in = [] if layer.fixed_in else odd_widths(layer.cin, size)
        odd_out = [] if layer.fixed_out else odd_widths(layer.cout, size)
        pairs = [(i, o) for i in ins[:3] for o in outs[:3]]
        pairs += [(ins[0], o) for o in odd_out] + [(i, outs[0]) for i in odd_in]
        pairs += [(i, o) for i, o in zip(odd_in, odd_out, strict=False)]
        pairs += [(ins[-1], outs[-1])]
        return list(dict.fromkeys(pairs))

    def micro(self, layer: LayerSpec, batch: int = 1) -> object:
        """``layer`` as a one-op ONNX model (plus the ops ORT fuses into it) at ``batch``, random weights."""
        from onnx import TensorProto, helper, numpy_helper

        rng = np.random.default_rng(0)
        x_shape = self.input_shape(layer)
        if layer.kind != "linear":
            x_shape[0] = batch
        inits, nodes, inputs = self.op(layer, rng)
        out = "y0"
        if "Add" in layer.post:
            r_shape = self.output_shape(layer)
            r_shape[0] = x_shape[0]
            inputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, r_shape))
            nodes.append(helper.make_node("Add", [out, "r"], ["y1"]))
            out = "y1"
        for act in (p for p in layer.post if p != "Add"):
            extra = []
            if act == "Clip":  # ReLU6
                inits += [
                    numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("lo", 0), ("hi", 6))
                ]
                extra = ["lo", "hi"]
            nodes.append(helper.make_node(act, [out, *extra], [out + "a"]))
            out += "a"
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)
        y = helper.make_tensor_value_info(out, TensorProto.FLOAT, None)
        graph = helper.make_graph(nodes, "micro", [x, *inputs], [y], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8  # readable by onnxruntime >= 1.10 on older devices
        return model

    @abstractmethod
    def input_shape(self, layer: LayerSpec) -> list[int]:
        """Shape of the micro-model's input ``x`` (batch 1)."""

    @abstractmethod
    def output_shape(self, layer: LayerSpec) -> list[int]:
        """Shape of the op's output ``y0`` (the residual input ``r`` has it too)."""

    @abstractmethod
    def op(self, layer: LayerSpec, rng: np.random.Generator) -> tuple[list, list, list]:
        """``(initializers, nodes, extra graph inputs)`` computing ``y0`` from ``x``."""


class _ConvKind(OpKind):
    """A 2-D convolution; ``features``: MACs, input and output activations, each again when off ``q``."""

    def features(self, layer: LayerSpec, q: int) -> list[float]:
        macs = float(layer.macs)
        a_in = float(layer.cin * layer.in_hw[0] * layer.in_hw[1])
        a_out = float(layer.cout * layer.out_hw[0] * layer.out_hw[1])
        u_in = float(q > 1 and not layer.fixed_in and layer.cin % q != 0)
        u_out = float(q > 1 and layer.cout % q != 0)
        return [1.0, macs, a_in, a_out, u_out * macs, u_in * macs, u_out * a_out, u_in * a_in]

    def input_shape(self, layer: LayerSpec) -> list[int]:
        return [1, layer.cin, *layer.in_hw]

    def output_shape(self, layer: LayerSpec) -> list[int]:
        return [1, layer.cout, *layer.out_hw]

    def op(self, layer: LayerSpec, rng: np.random.Generator) -> tuple[list, list, list]:
        from onnx import helper, numpy_helper

        w = rng.standard_normal((layer.cout, layer.cin // layer.groups, *layer.kernel), dtype=np.float32)
        b = rng.standard_normal(layer.cout, dtype=np.float32)
        node = helper.make_node(
            "Conv",
            ["x", "w", "b"],
            ["y0"],
            kernel_shape=list(layer.kernel),
            strides=list(layer.stride),
            pads=list(layer.pads),
            dilations=list(layer.dilation),
            group=layer.groups,
        )
        return [numpy_helper.from_array(w * 0.1, "w"), numpy_helper.from_array(b, "b")], [node], []


@OP_KINDS.register("conv")
class Conv(_ConvKind):
    """A dense 2-D convolution (groups 1), BatchNorm folded, activation fused; both widths prunable."""

    name = "conv"


@OP_KINDS.register("grouped")
class Grouped(_ConvKind):
    """A grouped convolution (ResNeXt): widths move in multiples of the group count."""

    name = "grouped"

    def grid(self, layer: LayerSpec, size: GridSize) -> list[tuple[int, int]]:
        g = layer.groups
        pairs = super().grid(layer, size)
        return list(dict.fromkeys((max(g, i // g * g), max(g, o // g * g)) for i, o in pairs))


@OP_KINDS.register("depthwise")
class Depthwise(_ConvKind):
    """A depthwise convolution (groups = in = out): one width, the channel count (MobileNets)."""

    name = "depthwise"

    def features(self, layer: LayerSpec, q: int) -> list[float]:
        c = layer.cout
        macs = float(layer.macs)
        act = float(c * (layer.in_hw[0] * layer.in_hw[1] + layer.out_hw[0] * layer.out_hw[1]))
        u = float(q > 1 and c % q != 0)
        return [1.0, macs, act, u * macs, u * act, u]

    def grid(self, layer: LayerSpec, size: GridSize) -> list[tuple[int, int]]:
        widths = aligned_widths(layer.cout, size) + odd_widths(layer.cout, size)
        extra = [w + 8 for w in aligned_widths(layer.cout, size)[1:2]]  # one more aligned point
        return [(w, w) for w in dict.fromkeys(widths + extra) if w <= layer.cout]


@OP_KINDS.register("linear")
class Linear(OpKind):
    """A fully connected layer (Gemm, or MatMul with constant weights): ``rows x cin @ cin x cout``."""

    name = "linear"

    def features(self, layer: LayerSpec, q: int) -> list[float]:
        rows = float(layer.in_hw[0])
        macs = float(layer.macs)
        u_in = float(q > 1 and not layer.fixed_in and layer.cin % q != 0)
        u_out = float(q > 1 and layer.cout % q != 0)
        return [1.0, macs, rows * layer.cin, rows * layer.cout, u_out * macs, u_in * macs]

    def input_shape(self, layer: LayerSpec) -> list[int]:
        return [layer.in_hw[0], layer.cin]

    def output_shape(self, layer: LayerSpec) -> list[int]:
        return [layer.in_hw[0], layer.cout]

    def op(self, layer: LayerSpec, rng: np.random.Generator) -> tuple[list, list, list]:
        from onnx import helper, numpy_helper

        w = rng.standard_normal((layer.cout, layer.cin), dtype=np.float32) * 0.1
        b = rng.standard_normal(layer.cout, dtype=np.float32)
        node = helper.make_node("Gemm", ["x", "w", "b"], ["y0"], transB=1)
        return [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")], [node], []


def kind_of(layer: LayerSpec) -> OpKind:
    """The registered kind of ``layer`` (an instance; kinds hold no state)."""
    return OP_KINDS.get(layer.kind)()
