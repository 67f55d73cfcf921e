"""The copy-paste deploy snippet of report.md/html: run the shipped file with numpy and onnxruntime only.

Why generated from report.json ``input`` (not a template with blanks): the constants it embeds (input name,
mean/std, class names, output meaning) are exactly what the shipped file was checked with, and ``edgekd report
RUN_DIR`` regenerates it without the run's data. Why numpy + onnxruntime only: that is what a device has (the
profiling probe needs the same two), so the snippet runs there as pasted. ``tests/test_deploy_snippet.py``
executes the snippet of a real run and checks its predictions against the report's ORT accuracy.

>>> print(deploy_snippet(report["input"], "classification"))  # doctest: +SKIP
import numpy as np
...
"""

from __future__ import annotations

import json
from typing import Any

EMBED_MAX_CLASSES = 50
"""Up to this many class names are pasted into the snippet; more are read from the file's ``class_names``."""
LINE = 100  # wrap embedded lists at this width, so the snippet reads well in a report


def deploy_snippet(block: dict[str, Any], task: str) -> str:
    """Python source that loads ``images.npy`` (uint8 NCHW), preprocesses, runs the file and prints predictions.

    Args:
        block: report.json ``input`` (see :class:`edgekd.report.deploy.InputSpec`).
        task: ``classification`` | ``segmentation`` | ``regression``: how the output is read.

    Output, one line per image: ``0: Trouser (97.1%)`` (classification), ``0: background 81.2%, Bag 18.8%``
    (segmentation: each predicted class's share of the pixels), ``0: pitch=0.1234, yaw=-0.0567`` (regression).
    """
    regression = task == "regression"
    artifact = block.get("artifact") or "student.onnx"
    lines = [
        f"# Run {artifact} on uint8 images with numpy and onnxruntime only (pip install numpy onnxruntime).",
        *(["import json", ""] if _reads_classes(block, regression) else []),
        "import numpy as np",
        "import onnxruntime as ort",
        "",
        f"MEAN = np.array({json.dumps(block['preprocessing']['mean'])}, dtype=np.float32).reshape(1, -1, 1, 1)",
        f"STD = np.array({json.dumps(block['preprocessing']['std'])}, dtype=np.float32).reshape(1, -1, 1, 1)",
        *_labels(block, regression),
        "",
        "",
        "def preprocess(images):",
        f'    """uint8 pixels, {_image_shape(block)} -> {block["dtype"]} input: '
        f'{block["preprocessing"]["formula"]}."""',
        f"    return ((images.astype(np.float32) / 255.0 - MEAN) / STD).astype(np.{block['dtype']})",
        "",
        "",
        f'session = ort.InferenceSession({json.dumps(artifact)}, providers=["CPUExecutionProvider"])',
        *_classes_from_file(block, regression),
        f'images = np.load("images.npy")  # uint8, {_image_shape(block)}; {_one_image(block)}',
        *_run(block),
        *_READOUT[task],
    ]
    return "\n".join(lines) + "\n"


def _reads_classes(block: dict[str, Any], regression: bool) -> bool:
    return not regression and len(block.get("classes") or ()) > EMBED_MAX_CLASSES


def _labels(block: dict[str, Any], regression: bool) -> list[str]:
    """``OUTPUTS = {...}`` (regression) or ``CLASSES = [...]`` pasted in, unless there are too many classes."""
    if regression:
        items = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in block["outputs"].items()]
        return ["OUTPUTS = {  # output column -> meaning", *[f"    {item}," for item in items], "}"]
    if _reads_classes(block, regression):
        return []
    return ["CLASSES = [", *_packed([json.dumps(c) for c in block.get("classes") or ()]), "]"]


def _classes_from_file(block: dict[str, Any], regression: bool) -> list[str]:
    if not _reads_classes(block, regression):
        return []
    return ['CLASSES = json.loads(session.get_modelmeta().custom_metadata_map["class_names"])']


def _packed(items: list[str]) -> list[str]:
    """Comma-separated ``items`` on indented lines of at most :data:`LINE` characters (never splitting one)."""
    lines: list[str] = []
    current = ""
    for item in items:
        if current and len(current) + len(item) + 2 > LINE:
            lines.append(current.rstrip())
            current = ""
        current = f"{current or '    '}{item}, "
    return [*lines, current.rstrip()] if current else lines


def _image_shape(block: dict[str, Any]) -> str:
    """``N x 1 x 28 x 28`` from the input shape (symbolic axes by letter: ``N x 3 x H x W``)."""
    shape = list(block["shape"])
    dims = ["N"]  # any number of images: a fixed-batch file is run in chunks (see _run)
    for letter, dim in zip("CHW", shape[1:], strict=False):
        dims.append(str(dim) if isinstance(dim, int) else letter)
    text = " x ".join(dims)
    return text + " (any HxW)" if any(isinstance(d, str) for d in shape[2:]) else text


def _one_image(block: dict[str, Any]) -> str:
    """How to feed a single image as loaded by PIL/OpenCV (edgekd reads colour images as RGB, via PIL)."""
    channels = block["shape"][1] if len(block["shape"]) > 1 else None
    if channels == 1:
        return "one HxW grey image: image[None, None]"
    return "one HxWx3 RGB image: image.transpose(2, 0, 1)[None]"


def _run(block: dict[str, Any]) -> list[str]:
    """One call for a symbolic batch; chunks of the fixed batch size otherwise (edgekd fixes it at 1)."""
    name = json.dumps(block["name"])
    batch = block["shape"][0] if block["shape"] else "batch"
    if not isinstance(batch, int):
        return [f"outputs = session.run(None, {{{name}: preprocess(images)}})[0]"]
    return [
        f"x = preprocess(images)  # this file takes a fixed batch of {batch}: run it in chunks of {batch}",
        f"outputs = np.concatenate([session.run(None, {{{name}: x[i : i + {batch}]}})[0] "
        f"for i in range(0, len(x), {batch})])",
    ]


_READOUT = {
    "classification": [
        "probs = np.exp(outputs - outputs.max(axis=1, keepdims=True))",
        "probs /= probs.sum(axis=1, keepdims=True)",
        "for i, k in enumerate(probs.argmax(axis=1)):",
        '    print(f"{i}: {CLASSES[k]} ({probs[i, k]:.1%})")',
    ],
    "segmentation": [
        "for i, mask in enumerate(outputs.argmax(axis=1)):  # N x H x W class indices",
        "    counts = np.bincount(mask.ravel(), minlength=len(CLASSES))",
        '    print(f"{i}: " + ", ".join(f"{CLASSES[c]} {counts[c] / mask.size:.1%}" for c in np.flatnonzero(counts)))',
    ],
    "regression": [
        "for i, row in enumerate(outputs.reshape(len(outputs), -1)):",
        '    print(f"{i}: " + ", ".join(f"{name}={value:.4f}" for name, value in zip(OUTPUTS, row)))',
    ],
}
