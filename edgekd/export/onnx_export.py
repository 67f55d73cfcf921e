"""PyTorch → ONNX conversion and the metadata a deployed file carries about itself.

Which exporter, and why the TorchScript one (``dynamo=False``). Both were measured in torch 2.14.1 on CPU
(resnet20 1×28×28, pruned resnet20, torchvision resnet18 and mobilenet_v2 at 3×224×224, opsets 17–23, dynamic
batch, ORT parity at batch 1 and 7):

* both export all four with identical parity (max |PyTorch − ORT| ≤ 2e-6) and an equally clean graph after
  onnxsim (BatchNorm folded into Conv, no Identity nodes);
* the dynamo exporter does not honour ``opset=17``: its opset-18 → 17 version conversion fails on these conv
  nets (``axes_input_to_attribute`` assertion) and it silently ships opset 18 after printing a traceback;
  the TorchScript exporter writes exactly the opset asked for, 17 through 23;
* the TorchScript exporter is 3–5× faster (resnet18 0.8–1.9 s vs 2.5–5.8 s; mobilenet_v2 1.4–4 s vs
  11–16 s on the shared 2-core machine), which matters because every run exports teacher and student.

Its known weakness is tracing: a branch on tensor *values* is baked in for the example input (dynamo would
refuse such a model). The parity gate on real eval inputs catches that, so it is never shipped silently.
The TorchScript exporter is deprecated upstream; when torch removes it, switch :func:`torch_to_onnx` to
``dynamo=True, verbose=False, dynamic_shapes={"x": {0: torch.export.Dim("batch")}}`` (opset ≥ 18).
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import re
from typing import TYPE_CHECKING

import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.export._quiet import quiet

if TYPE_CHECKING:
    import onnx

    from edgekd.data.base import DataBundle
    from edgekd.tasks.base import Task

INPUT_NAME = "input"
OUTPUT_NAME = "output"
BATCH_DIM = "batch"
SPATIAL_DIMS = ("height", "width")  # symbolic input/output H×W of dense (segmentation) exports
RESERVED_KEYS = (
    "preprocessing",
    "mean",
    "std",
    "preprocessing_source",
    "input_name",
    "input_shape",
    "class_names",
    "task",
    "edgekd_version",
)


def torch_to_onnx(
    model: nn.Module, example: torch.Tensor, opset: int, dynamic_batch: bool, dynamic_spatial: bool = False
) -> onnx.ModelProto:
    """Export ``model`` (in eval mode) to an in-memory ONNX model with input ``input`` and output ``output``.

    Args:
        model: The network; its training flag is restored afterwards.
        example: A real, normalised input batch used for tracing (batch ≥ 2 keeps the traced graph from
            special-casing a batch of one when ``dynamic_batch`` is set).
        opset: Default-domain opset to target.
        dynamic_batch: Make axis 0 of the input and the first output symbolic (``batch``).
        dynamic_spatial: Also make axes 2 and 3 (``height``, ``width``) of the input and the output symbolic:
            a segmentation model then runs on any image size, predicting a mask of the same size.

    Returns:
        The exported model, BatchNorm already folded into the preceding convolutions.

    Raises:
        EdgekdError: The model cannot be exported; the message names the unsupported operator and, when the
            exporter's IR dump shows it, the layer and source line that use it.
    """
    import onnx

    buffer = io.BytesIO()
    axes = ({0: BATCH_DIM} if dynamic_batch else {}) | (
        dict(zip((2, 3), SPATIAL_DIMS, strict=True)) if dynamic_spatial else {}
    )
    dynamic_axes = {INPUT_NAME: axes, OUTPUT_NAME: dict(axes)} if axes else None
    failure: Exception | None = None
    device = next((p.device for p in model.parameters()), example.device)
    example = example.to(device)
    was_training = model.training
    model.eval()
    try:
        with quiet("torch.onnx.export") as captured:
            try:
                torch.onnx.export(
                    model,
                    (example,),
                    buffer,
                    dynamo=False,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    opset_version=opset,
                    dynamic_axes=dynamic_axes,
                )
            except Exception as exc:  # re-raised below, once the console is ours again
                failure = exc
    finally:
        model.train(was_training)
    if failure is not None:
        layers = {name for name, _ in model.named_modules()}
        raise EdgekdError(describe_export_failure(failure, captured.text, opset, layers)) from failure
    return onnx.load_model_from_string(buffer.getvalue())


def describe_export_failure(
    exc: Exception, exporter_output: str, opset: int, layers: set[str] | None = None
) -> str:
    """One line saying what could not be exported, where, and what to do."""
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    op = re.search(r"operator '([\w:.]+)'", first)
    if op is None:
        return f"ONNX export failed: {type(exc).__name__}: {first[:300]} (--debug shows the traceback)"
    where = locate_op(op.group(1), exporter_output, layers)
    return (
        f"ONNX export failed: operator '{op.group(1)}'{where} has no ONNX opset {opset} conversion; "
        "replace that operation in the model or try another export.opset"
    )


def locate_op(op: str, ir_dump: str, layers: set[str] | None = None) -> str:
    """`` in layer 'features.1' (model.py:42)`` for the first use of ``op`` in the exporter's IR dump.

    The TorchScript IR lines look like ``%7 : Float(...) = aten::op(%5), scope: pkg.Net::/pkg.Seq::features/
    pkg.Block::features.1 # model.py:42:0``: the ``::name`` parts of the scope spell the module path (a child
    of a container repeats its parent's name, ``features`` → ``features.1``), the comment is the source line.
    A reconstructed path not in ``layers`` (the model's ``named_modules``) is left out rather than guessed.
    """
    for line in ir_dump.splitlines():
        if f"= {op}(" not in line:
            continue
        scope = re.search(r"scope: (\S+)", line)
        path: list[str] = []
        for part in scope.group(1).split("/") if scope else []:
            name = part.split("::", 1)[1] if "::" in part else ""
            if not name:
                continue
            if path and name.startswith(path[-1] + "."):
                path[-1] = name
            else:
                path.append(name)
        layer = ".".join(path)
        if not layer:
            where = " in the model's forward"
        else:
            where = f" in layer '{layer}'" if layers is None or layer in layers else ""
        source = re.search(r"# (\S+?):(\d+)", line)
        if source:
            where += f" ({source.group(1).rsplit('/', 1)[-1]}:{source.group(2)})"
        return where
    return ""


def edgekd_version() -> str:
    """The running edgekd's version (the package attribute, else the installed distribution's)."""
    try:
        from edgekd import __version__

        return str(__version__)
    except ImportError:
        try:
            return importlib.metadata.version("edgekd")
        except importlib.metadata.PackageNotFoundError:
            return "unknown"


def build_metadata(
    data: DataBundle, task: Task, dynamic_batch: bool, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The ``metadata_props`` a deployed file needs to be fed and read correctly without edgekd.

    Args:
        data: Supplies preprocessing (as prose, as ``mean``/``std`` JSON lists and, as ``preprocessing_source``,
            where they came from), input shape and class names.
        task: Its name tells a consumer how to read the output.
        dynamic_batch: Whether the batch axis is symbolic (``"batch"``) or fixed at 1.
        extra: Caller's keys (e.g. ``role``, ``model``); they may not override the keys above.

    Raises:
        ValueError: ``extra`` reuses a reserved key (a programming error, not user input).
    """
    height, width = data.input_size  # dense exports accept any H×W; this is the size the model was trained at
    props = {
        "preprocessing": data.preprocessing.describe(),
        # the same numbers as JSON lists, so a consumer (and the report's deploy snippet) need not parse prose
        "mean": json.dumps(list(data.preprocessing.mean)),
        "std": json.dumps(list(data.preprocessing.std)),
        # where mean/std came from: preset | declared | measured | teacher | dataset, the preset's name, why
        "preprocessing_source": json.dumps(
            {
                "source": data.preprocessing.source,
                "preset": data.preprocessing.preset,
                "detail": data.preprocessing.detail,
            }
        ),
        "input_name": INPUT_NAME,
        "input_shape": json.dumps([BATCH_DIM if dynamic_batch else 1, data.in_channels, height, width]),
        "class_names": json.dumps(list(data.class_names)),
        "task": task.name,
        "edgekd_version": edgekd_version(),
    }
    clash = sorted(set(extra or {}) & set(props))
    if clash:
        raise ValueError(f"metadata keys {clash} are reserved by edgekd ({', '.join(RESERVED_KEYS)})")
    props.update({str(k): str(v) for k, v in (extra or {}).items()})
    return props


def stamp_metadata(model: onnx.ModelProto, props: dict[str, str]) -> None:
    """Replace the model's ``metadata_props`` with ``props``.

    Replacing (not appending) also drops onnxsim's ``onnxsim.*`` provenance keys, which list every removed
    node (kilobytes of text nobody deploying the file needs); the report notes whether it was simplified.
    """
    import onnx

    onnx.helper.set_model_props(model, props)


def check_exported(model: onnx.ModelProto, label: str) -> None:
    """``onnx.checker`` on an export edgekd produced; a rejection is a runtime failure, not bad input."""
    import onnx

    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "invalid model")
        raise EdgekdError(f"{label}: the exported model fails onnx.checker ({first[:200]})") from None
