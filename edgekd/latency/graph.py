"""The prunable operators of an ONNX graph, as ONNX Runtime will run them: :class:`LayerSpec` per Conv/Gemm.

Why read the ONNX file and not the PyTorch module: the latency model must describe what the device runs. The
exported graph already has BatchNorm folded into its convolutions, and ORT fuses a following activation
(Conv+Relu → FusedConv) and, in its NCHWc layout, a residual Add; so a layer here is a Conv or Gemm with the
ops ORT fuses into it (``post``). A pruned student exported the same way has the same layers in the same
order with other widths: :func:`architecture_hash` ignores widths, so one calibration of the teacher serves
every student pruned from it (the cache key's "model hash").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from edgekd.errors import InputError

ACTIVATIONS = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh"})
LAYER_OPS = frozenset({"Conv", "Gemm", "MatMul"})


@dataclass(frozen=True)
class LayerSpec:
    """One prunable operator: its kind, widths and everything else its latency depends on.

    Attributes:
        name: the ONNX node name (index-stable across a teacher and the students pruned from it).
        kind: ``conv`` (groups 1), ``depthwise`` (groups = in = out), ``grouped``, ``linear``.
        cin, cout: input and output channels (features for ``linear``): what pruning changes.
        kernel, stride, pads, dilation: the conv's attributes (``linear``: ``(1, 1)``, ...).
        groups: conv groups (a depthwise layer keeps ``groups == cin == cout`` at any width).
        in_hw: input height and width (``linear``: ``(rows, 1)``, the batch-times-tokens it multiplies).
        out_hw: output height and width.
        post: the ops ORT fuses into it, in order (``("Add", "Relu")``).
        fixed_in: ``cin`` is the graph input's: pruning cannot change it.
        fixed_out: the layer feeds the model output (a head): pruning keeps its outputs.
    """

    name: str
    kind: str
    cin: int
    cout: int
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    in_hw: tuple[int, int] = (1, 1)
    out_hw: tuple[int, int] = (1, 1)
    post: tuple[str, ...] = ()
    fixed_in: bool = False
    fixed_out: bool = False

    def signature(self) -> str:
        """Everything but the widths: equal for a teacher's layer and its pruned student's."""
        grouping = self.kind if self.kind != "grouped" else f"grouped{self.groups}"
        parts = (grouping, self.kernel, self.stride, self.pads, self.dilation, self.in_hw, self.post)
        return json.dumps(parts, separators=(",", ":"))

    def table_key(self) -> str:
        """The signature plus the unpruned widths: layers with equal keys share one fitted table."""
        return f"{self.signature()}@{self.cin}x{self.cout}"

    def with_widths(self, cin: int, cout: int) -> LayerSpec:
        """This layer at other widths (a depthwise layer's groups follow its channels)."""
        if self.kind == "depthwise":
            return replace(self, cin=cout, cout=cout, groups=cout)
        return replace(self, cin=cin, cout=cout)

    def misaligned_elems(self, block: int) -> int:
        """Activation elements ORT reorders around this layer when a width misses its SIMD ``block``, else 0.

        ORT runs a chain of convolutions whose channels are multiples of the NCHWc block (8 on AVX2 and NEON,
        16 on AVX-512) in its blocked layout; a conv off the block falls back to plain NCHW, and the tensors
        on both sides of it are reordered in and out of the blocked layout. A single-op micro-model cannot see
        that (it has no neighbours), so the whole-graph term prices it per element reordered.
        """
        if self.kind == "linear" or block <= 1:
            return 0
        off = (self.cout % block and not self.fixed_out) or (self.cin % block and not self.fixed_in)
        if not off:
            return 0
        return self.cin * self.in_hw[0] * self.in_hw[1] + self.cout * self.out_hw[0] * self.out_hw[1]

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one inference at batch 1."""
        kh, kw = self.kernel
        return self.cin // self.groups * self.cout * kh * kw * self.out_hw[0] * self.out_hw[1]


def concrete_input_shape(model: Any, shape: Sequence[int] | None, batch: int) -> list[int]:
    """The input shape to analyse ``model`` at: ``shape``, else the fixed dims with the batch set, else the
    size edgekd's export recorded (``input_shape`` metadata) for the dynamic ones.

    Raises:
        InputError: the model has more than one input, or a dynamic non-batch dim with no recorded size.
    """
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1:
        raise InputError(f"latency model: needs a model with one input, this one has {len(inputs)}")
    if shape is not None:
        return [batch, *list(shape)[1:]]
    meta = {p.key: p.value for p in model.metadata_props}
    recorded = json.loads(meta.get("input_shape", "[]") or "[]")
    dims = inputs[0].type.tensor_type.shape.dim
    out = []
    for axis, dim in enumerate(dims):
        if axis == 0:
            out.append(batch)
        elif dim.HasField("dim_value") and dim.dim_value > 0:
            out.append(int(dim.dim_value))
        elif axis < len(recorded) and isinstance(recorded[axis], int) and recorded[axis] > 0:
            out.append(int(recorded[axis]))
        else:
            raise InputError(
                f"latency model: input '{inputs[0].name}' axis {axis} is dynamic and no size is recorded; "
                "pass --shape INPUT=1x3xHxW"
            )
    return out


def read_layers(model: Any, shape: Sequence[int] | None = None, batch: int = 1) -> list[LayerSpec]:
    """The prunable layers of an ONNX model, in graph order, at the given (or recorded) input shape.

    Raises:
        InputError: the input size cannot be resolved (see :func:`concrete_input_shape`), or the model has
            no Conv/Gemm/MatMul with constant weights.
    """
    import onnx

    input_shape = concrete_input_shape(model, shape, batch)
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    inits = {t.name: t for t in fixed.graph.initializer}
    graph_input = next(i for i in fixed.graph.input if i.name not in inits)
    for dim, size in zip(graph_input.type.tensor_type.shape.dim, input_shape, strict=True):
        dim.Clear()
        dim.dim_value = size
    inferred = onnx.shape_inference.infer_shapes(fixed)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    }
    walk = _Graph(inferred.graph, graph_input.name)
    layers = []
    for node in inferred.graph.node:
        spec = _layer(node, inits, shapes, walk)
        if spec is not None:
            layers.append(spec)
    if not layers:
        raise InputError("latency model: the model has no Conv/Gemm/MatMul layer with constant weights")
    return layers


def architecture_hash(layers: Sequence[LayerSpec], input_shape: Sequence[int]) -> str:
    """A width-free hash of the model: its layers' signatures in order and its input's spatial size."""
    text = json.dumps([list(input_shape)[2:], [layer.signature() for layer in layers]])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _Graph:
    """Producers and consumers of each tensor, to find fused ops, the graph input and the heads."""

    def __init__(self, graph: Any, input_name: str) -> None:
        self.input_name = input_name
        self.outputs = {o.name for o in graph.output}
        self.consumers: dict[str, list[Any]] = {}
        self.position: dict[str, int] = {}  # tensor -> index of the node producing it
        for index, node in enumerate(graph.node):
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
            for name in node.output:
                self.position[name] = index

    def fused(self, node: Any) -> tuple[str, ...]:
        """The ops ORT fuses after ``node``: a residual Add it is the later input of, then an activation."""
        post: list[str] = []
        out = node.output[0]
        nxt = self.consumers.get(out, [])
        if len(nxt) == 1 and nxt[0].op_type == "Add" and out not in self.outputs:
            mine = self.position[out]
            if all(self.position.get(i, -1) < mine for i in nxt[0].input if i != out):
                post.append("Add")
                out = nxt[0].output[0]
                nxt = self.consumers.get(out, [])
        if len(nxt) == 1 and nxt[0].op_type in ACTIVATIONS and out not in self.outputs:
            post.append(nxt[0].op_type)
        return tuple(post)

    def feeds_output(self, node: Any) -> bool:
        """The model output is reached from ``node`` without another prunable layer on the way (a head)."""
        stack, seen = list(node.output), set()
        while stack:
            name = stack.pop()
            if name in self.outputs:
                return True
            if name in seen:
                continue
            seen.add(name)
            for nxt in self.consumers.get(name, []):
                if nxt.op_type not in LAYER_OPS:
                    stack.extend(nxt.output)
        return False


def _ints(node: Any, name: str, default: Sequence[int]) -> tuple[int, ...]:
    for attr in node.attribute:
        if attr.name == name:
            return tuple(attr.ints) if attr.ints else (int(attr.i),)
    return tuple(default)


def _layer(node: Any, inits: dict[str, Any], shapes: dict[str, list[int]], walk: _Graph) -> LayerSpec | None:
    if node.op_type not in LAYER_OPS or len(node.input) < 2 or node.input[1] not in inits:
        return None
    weight = list(inits[node.input[1]].dims)
    x = shapes.get(node.input[0], [])
    y = shapes.get(node.output[0], [])
    common = {
        "name": node.name or node.output[0],
        "post": walk.fused(node),
        "fixed_in": node.input[0] == walk.input_name,
        "fixed_out": walk.feeds_output(node),
    }
    if node.op_type == "Conv":
        if len(weight) != 4 or len(x) != 4 or len(y) != 4:
            return None  # 1-D / 3-D convolutions are not modelled (their time lands in the whole-graph term)
        groups = _ints(node, "group", (1,))[0]
        cin, cout = int(x[1]), int(weight[0])
        kind = "conv" if groups == 1 else "depthwise" if groups == cin == cout else "grouped"
        return LayerSpec(
            kind=kind,
            cin=cin,
            cout=cout,
            kernel=(int(weight[2]), int(weight[3])),
            stride=_pair(_ints(node, "strides", (1, 1))),
            pads=_quad(_ints(node, "pads", (0, 0, 0, 0))),
            dilation=_pair(_ints(node, "dilations", (1, 1))),
            groups=groups,
            in_hw=(int(x[2]), int(x[3])),
            out_hw=(int(y[2]), int(y[3])),
            **common,
        )
    if len(weight) != 2 or not x:
        return None
    trans_b = node.op_type == "Gemm" and _ints(node, "transB", (0,))[0] == 1
    cin, cout = (weight[1], weight[0]) if trans_b else (weight[0], weight[1])
    rows = 1
    for d in x[:-1]:
        rows *= max(int(d), 1)
    return LayerSpec(kind="linear", cin=int(cin), cout=int(cout), in_hw=(rows, 1), out_hw=(rows, 1), **common)


def _pair(values: tuple[int, ...]) -> tuple[int, int]:
    return (values[0], values[-1])


def _quad(values: tuple[int, ...]) -> tuple[int, int, int, int]:
    return (values + (0, 0, 0, 0))[:4] if len(values) >= 4 else (0, 0, 0, 0)
