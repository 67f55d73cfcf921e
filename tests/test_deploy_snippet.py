"""The deploy snippet of report.md runs as pasted, with numpy and onnxruntime only, and predicts what the report
says the shipped file predicts.

One small real compress run (the quickstart recipe on SMALL_RUN) supplies the report.md, the student.onnx and the
eval images; the segmentation and regression snippets run against tiny models exported through edgekd's own
export path on synth_eyes images, so every task's readout (and the fixed-batch chunking) is executed too.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.data import build_data
from edgekd.export import ParityReference, export_onnx
from edgekd.export.ort import OrtPredictor, create_session
from edgekd.recipe.schema import DataConfig, ExportConfig
from edgekd.report.deploy import GAZE_OUTPUTS, describe_input
from edgekd.report.schema import InputEntry
from edgekd.report.snippet import EMBED_MAX_CLASSES, deploy_snippet
from edgekd.run import load_recipe
from edgekd.tasks import get_task
from tests.conftest import QUICKSTART, SMALL_KD_RUN, cli, cli_env

SNIPPET = re.compile(r"## Input and deployment\n.*?```python\n(.*?)```", re.S)
CLASSIFIED = re.compile(r"(\d+): (.+) \(\d+\.\d%\)")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deploy") / "run"
    proc = cli("compress", str(QUICKSTART), "--out", str(out), *SMALL_KD_RUN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def run_snippet(source: str, workdir: Path, model: Path, images: np.ndarray) -> list[str]:
    """Run ``source`` as a user would: a file beside a copy of ``model`` and ``images.npy``; its output lines."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(model, workdir / model.name)
    np.save(workdir / "images.npy", images)
    (workdir / "snippet.py").write_text(source)
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }
    assert imported <= {"numpy", "onnxruntime", "json"}, imported  # what a device has, nothing of edgekd
    proc = subprocess.run(
        [sys.executable, "-I", "snippet.py"],  # -I: no PYTHONPATH, user site or script dir on the path
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.splitlines()


def test_report_input_describes_the_shipped_file(run_dir: Path) -> None:
    report = json.loads((run_dir / "report.json").read_text())
    data = build_data(load_recipe(run_dir / "recipe.yaml").data)
    block = report["input"]
    assert block["artifact"] == "student.onnx" and block["name"] == "input"
    assert (
        block["shape"] == ["batch", 1, 28, 28] and block["dtype"] == "float32" and block["layout"] == "NCHW"
    )
    assert block["preprocessing"]["mean"] == list(data.preprocessing.mean)
    assert block["preprocessing"]["std"] == list(data.preprocessing.std)
    assert block["preprocessing"]["preset"] is None  # Fashion-MNIST's own statistics, not a named preset
    assert block["classes"] == list(data.class_names) and "outputs" not in block
    assert [g["kind"] for g in report["gates"]] == ["parity", "parity"]  # the recipe sets no gates


def test_snippet_from_report_md_reproduces_the_reported_ort_accuracy(run_dir: Path, tmp_path: Path) -> None:
    """The snippet, pasted from report.md, scores the run's eval images exactly as the report says student.onnx
    does, image by image the same as edgekd's own ONNX Runtime evaluation."""
    report = json.loads((run_dir / "report.json").read_text())
    match = SNIPPET.search((run_dir / "report.md").read_text())
    assert match, "report.md has no python snippet under '## Input and deployment'"
    data = build_data(load_recipe(run_dir / "recipe.yaml").data)  # the run's own eval split (eval_limit 256)
    images, labels = data.eval.images.numpy(), data.eval.targets.numpy()
    assert images.dtype == np.uint8 and images.shape[1:] == (1, 28, 28)

    lines = run_snippet(match.group(1), tmp_path / "device", run_dir / "student.onnx", images)

    parsed = [CLASSIFIED.fullmatch(line) for line in lines]
    assert len(lines) == len(images) and all(parsed), lines[:3]
    classes = report["input"]["classes"]
    predicted = np.array([classes.index(m.group(2)) for m in parsed])
    assert [int(m.group(1)) for m in parsed] == list(range(len(images)))
    student = next(a for a in report["artifacts"] if a["name"] == "student.onnx")
    assert float((predicted == labels).mean()) == pytest.approx(student["metrics"]["accuracy"], abs=1e-12)
    ours = OrtPredictor(create_session(run_dir / "student.onnx", threads=1))(
        next(iter(data.eval_loader(10_000)))[0]
    )
    assert predicted.tolist() == ours.argmax(dim=1).tolist()


def _synth_eyes(target: str) -> object:
    args = {"target": target, "train_size": 8, "eval_size": 6}
    return build_data(DataConfig(name="synth_eyes", args=args, augment=False, eval_limit=6))


def _export(model: nn.Module, data: object, task_name: str, path: Path, dynamic_batch: bool) -> object:
    task = get_task(task_name, data)
    cfg = ExportConfig(parity_samples=6, simplify=False, dynamic_batch=dynamic_batch)
    export_onnx(ParityReference(model.eval(), data, task), cfg, path)
    return task


def test_segmentation_snippet_runs_a_fixed_batch_file_in_chunks(tmp_path: Path) -> None:
    data = _synth_eyes("sclera")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(data.in_channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1))
    path = tmp_path / "student.onnx"
    _export(model, data, "segmentation", path, dynamic_batch=False)
    block = describe_input(path, data, "segmentation").as_report()
    InputEntry.model_validate(block)
    assert block["shape"] == [1, data.in_channels, "height", "width"]
    assert block["classes"] == ["background", "sclera"]

    lines = run_snippet(
        deploy_snippet(block, "segmentation"), tmp_path / "device", path, data.eval.images.numpy()
    )

    masks = OrtPredictor(create_session(path, threads=1))(next(iter(data.eval_loader(6)))[0]).argmax(dim=1)
    expected = []
    for i, mask in enumerate(masks.numpy()):
        counts = np.bincount(mask.ravel(), minlength=2)
        shares = ", ".join(
            f"{block['classes'][c]} {counts[c] / mask.size:.1%}" for c in np.flatnonzero(counts)
        )
        expected.append(f"{i}: {shares}")
    assert lines == expected


def test_regression_snippet_names_the_gaze_angles_and_prints_the_file_outputs(tmp_path: Path) -> None:
    data = _synth_eyes("gaze")
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(data.in_channels, 4, 3, stride=2),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    path = tmp_path / "student.onnx"
    _export(model, data, "regression", path, dynamic_batch=True)
    block = describe_input(path, data, "regression").as_report()
    InputEntry.model_validate(block)
    assert block["outputs"] == GAZE_OUTPUTS and "classes" not in block
    assert "radians" in block["outputs"]["pitch"]

    lines = run_snippet(
        deploy_snippet(block, "regression"), tmp_path / "device", path, data.eval.images.numpy()
    )

    values = OrtPredictor(create_session(path, threads=1))(next(iter(data.eval_loader(6)))[0]).numpy()
    assert len(lines) == len(values)
    for i, (line, row) in enumerate(zip(lines, values, strict=True)):
        printed = dict(re.findall(r"(\w+)=(-?\d+\.\d{4})", line))
        assert line.startswith(f"{i}: ") and list(printed) == ["pitch", "yaw"]
        np.testing.assert_allclose([float(v) for v in printed.values()], row, atol=6e-5)


def test_many_classes_are_read_from_the_file_rather_than_pasted() -> None:
    block = {
        "artifact": "student.onnx",
        "name": "input",
        "shape": ["batch", 3, 224, 224],
        "dtype": "float32",
        "layout": "NCHW",
        "preprocessing": {"preset": "imagenet", "mean": [0.485] * 3, "std": [0.229] * 3, "formula": "x"},
        "classes": [f"class {i}" for i in range(EMBED_MAX_CLASSES + 1)],
    }
    source = deploy_snippet(block, "classification")
    compile(source, "snippet.py", "exec")
    assert 'custom_metadata_map["class_names"]' in source and "class 3" not in source
    assert "import json" in source
