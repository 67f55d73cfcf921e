"""What ships with the model: how to call the shipped file (report.json ``input``) and a snippet that does.

Why read the shipped ONNX file rather than the recipe: the report must describe exactly the file a user deploys.
The graph's own input gives the name, the shape (symbolic axes stay strings, ``["batch", 1, 28, 28]``) and the
element type; the file's ``metadata_props`` (written by :func:`edgekd.export.onnx_export.build_metadata`) give
the preprocessing and the class names. The run's :class:`~edgekd.data.base.DataBundle` fills in what an older
file does not carry (structured ``mean``/``std``) and what only the dataset knows (that regression targets are
gaze angles in radians).

The snippet (:func:`deploy_snippet`) is a pure function of report.json, so ``edgekd report RUN_DIR`` re-renders
it; it needs only numpy and onnxruntime, the same as the profiling probe, so it runs on the device as pasted.

>>> spec = describe_input(Path("runs/q/student.onnx"), data, "classification")  # doctest: +SKIP
>>> spec.as_report()["shape"]  # doctest: +SKIP
['batch', 1, 28, 28]
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.data.gaze import GAZE_PITCH_YAW

if TYPE_CHECKING:
    import onnx

    from edgekd.data.base import DataBundle

LAYOUT = "NCHW"  # edgekd exports image models channels-first (torch's layout)
# pixel: uint8 0..255; mean and std per channel (edgekd.data.base.Preprocessing, what training fed the model)
FORMULA = "x = (pixel / 255 - mean) / std"
PRESETS = {"imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}
"""Named normalisations a reader recognises; ``preset`` is one of these names when mean/std match, else null."""
GAZE_OUTPUTS = {
    "pitch": "gaze pitch, radians (positive looks up; 0, 0 looks straight at the camera)",
    "yaw": "gaze yaw, radians (positive looks towards image left, -x in camera coordinates)",
}


@dataclass(frozen=True)
class InputSpec:
    """How to feed the shipped file and read its output: report.json ``input``.

    Attributes:
        artifact: The file described (``student.onnx``).
        name: The graph input's name.
        shape: Its dimensions; symbolic axes as their names (``"batch"``, ``"height"``).
        dtype: Its element type as a numpy name (``float32``).
        mean: Per-channel mean of ``pixel / 255``.
        std: Per-channel standard deviation of ``pixel / 255``.
        preset: A :data:`PRESETS` name the mean/std match, else ``None``.
        source: Where mean/std came from (``preset``, ``declared``, ``measured``, ``teacher``, ``dataset``;
            ``data.preprocessing``), ``None`` for a file that does not say.
        detail: How they were chosen, in words (``measured on 2000 of 20000 training images``).
        classes: Class names, index = output channel (classification, segmentation).
        outputs: Output name → meaning, in output order (regression).
    """

    artifact: str
    name: str
    shape: tuple[int | str, ...]
    dtype: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    preset: str | None = None
    classes: tuple[str, ...] | None = None
    outputs: dict[str, str] | None = None
    source: str | None = None
    detail: str | None = None

    def as_report(self) -> dict[str, Any]:
        """The ``input`` block: ``classes`` or ``outputs``, whichever the task has (never both)."""
        block: dict[str, Any] = {
            "artifact": self.artifact,
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "layout": LAYOUT,
            "preprocessing": {
                "preset": self.preset,
                "mean": list(self.mean),
                "std": list(self.std),
                "formula": FORMULA,
            },
        }
        if self.source is not None:  # where mean/std came from; unknown for a file that does not say
            block["preprocessing"].update(source=self.source, detail=self.detail or "")
        if self.outputs is not None:
            block["outputs"] = dict(self.outputs)
        else:
            block["classes"] = list(self.classes or ())
        return block


def describe_input(onnx_path: Path, data: DataBundle | None, task: str) -> InputSpec:
    """Read the input of the shipped ``onnx_path`` and its metadata; ``data`` fills gaps and regression meaning.

    Args:
        onnx_path: The shipped file (``RUN/student.onnx``).
        data: The run's dataset, or ``None`` (then the file alone must carry mean/std).
        task: ``classification`` | ``segmentation`` | ``regression``.

    Raises:
        ValueError: the file has no graph input, or neither it nor ``data`` says how to normalise pixels.
    """
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    name, shape, dtype = _graph_input(model)
    mean = _floats(props.get("mean")) or (tuple(data.preprocessing.mean) if data else ())
    std = _floats(props.get("std")) or (tuple(data.preprocessing.std) if data else ())
    if not mean or not std:
        raise ValueError(f"{onnx_path}: no mean/std in its metadata and no dataset to read them from")
    classes = tuple(json.loads(props["class_names"])) if "class_names" in props else ()
    if not classes and data is not None:
        classes = tuple(data.class_names)
    origin = _origin(props, data)
    spec = InputSpec(
        Path(onnx_path).name,
        name,
        shape,
        dtype,
        mean,
        std,
        origin.get("preset") or preset_of(mean, std),
        classes,
        source=origin.get("source"),
        detail=origin.get("detail"),
    )
    if task != "regression":
        return spec
    kind = data.target_kind if data is not None else ""
    return replace(spec, classes=None, outputs=regression_outputs(model, classes, kind))


def _origin(props: dict[str, str], data: DataBundle | None) -> dict[str, Any]:
    """``{source, preset, detail}`` of the file's normalisation: its ``preprocessing_source``, else the data's."""
    try:
        origin = json.loads(props["preprocessing_source"])
    except (KeyError, ValueError):
        origin = None
    if isinstance(origin, dict):
        return origin
    pre = data.preprocessing if data is not None else None
    return {} if pre is None else {"source": pre.source, "preset": pre.preset, "detail": pre.detail}


def preset_of(mean: tuple[float, ...], std: tuple[float, ...]) -> str | None:
    """The :data:`PRESETS` name whose mean/std equal these to 3 decimals (grey images never match RGB ones)."""
    for preset, (p_mean, p_std) in PRESETS.items():
        if len(mean) == len(p_mean) and all(
            abs(a - b) < 1e-3 for a, b in zip((*mean, *std), (*p_mean, *p_std), strict=True)
        ):
            return preset
    return None


def regression_outputs(model: onnx.ModelProto, names: tuple[str, ...], target_kind: str) -> dict[str, str]:
    """Output column → meaning: gaze angles when the dataset says so, else the dataset's names (or ``output_i``)."""
    if target_kind == GAZE_PITCH_YAW:
        return dict(GAZE_OUTPUTS)
    dims = model.graph.output[0].type.tensor_type.shape.dim if model.graph.output else []
    width = dims[1].dim_value if len(dims) == 2 and dims[1].dim_value else len(names) or 1
    labels = list(names) if len(names) == width else [f"output_{i}" for i in range(width)]
    return {label: "regression value, in the unit of the training targets" for label in labels}


def _graph_input(model: onnx.ModelProto) -> tuple[str, tuple[int | str, ...], str]:
    """Name, shape and numpy dtype of the one real input (initializers listed as inputs by old IRs excluded)."""
    import onnx

    weights = {init.name for init in model.graph.initializer}
    real = [i for i in model.graph.input if i.name not in weights]
    if not real:
        raise ValueError("the ONNX graph has no input")
    tensor = real[0].type.tensor_type
    shape = tuple(_dim(d) for d in tensor.shape.dim)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
    return real[0].name, shape, dtype


def _dim(dim: Any) -> int | str:
    """A fixed axis as its size, a symbolic one as its name, an unnamed unknown one as ``"?"``."""
    if dim.HasField("dim_value"):
        return int(dim.dim_value)
    return dim.dim_param or "?"


def _floats(text: str | None) -> tuple[float, ...]:
    if not text:
        return ()
    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        return ()
    return tuple(float(v) for v in values) if isinstance(values, list) else ()
