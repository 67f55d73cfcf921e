"""The export stage with real torch, ONNX, onnxsim and ONNX Runtime on a Fashion-MNIST eval subset.

One resnet20 export (random init) is shared by the tests that only read it; the failure paths use tiny models
so each test stays within a few seconds on a shared 2-core machine.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

import edgekd
from edgekd.data import DataBundle, build_data
from edgekd.engine import evaluate_model
from edgekd.errors import EdgekdError, GateError, InputError
from edgekd.export import (
    OrtPredictor,
    ParityReference,
    create_session,
    evaluate_onnx,
    export_onnx,
    session_options,
)
from edgekd.export.onnx_export import build_metadata, torch_to_onnx
from edgekd.export.simplify import simplify_model
from edgekd.io import TMP_MARK, sha256_file
from edgekd.models import build_model
from edgekd.onnxfile import check_onnx_file
from edgekd.recipe.schema import DataConfig, ExportConfig, ModelSpec
from edgekd.tasks import get_task

EVAL_LIMIT = 512


@pytest.fixture(scope="module")
def data() -> DataBundle:
    return build_data(DataConfig(train_limit=64, eval_limit=EVAL_LIMIT))


@pytest.fixture(scope="module")
def task():
    return get_task("classification")


@pytest.fixture(scope="module")
def resnet20() -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSpec(name="resnet20"), 10, 1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, resnet20, data, task):
    out = tmp_path_factory.mktemp("run") / "student.onnx"
    artifact = export_onnx(
        ParityReference(resnet20, data, task),
        ExportConfig(parity_samples=256),
        out,
        name="student",
        metadata={"role": "student"},
    )
    return artifact, out


class TinyNet(nn.Module):
    """A conv net small enough to export in well under a second."""

    def __init__(self, in_channels: int = 1, classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, stride=2)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


class ExportCheat(TinyNet):
    """Computes something else while being exported: what a parity gate exists to catch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        if torch.onnx.is_in_onnx_export():
            y = y + 1.0
        return y


class SingularValues(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.svdvals(x.flatten(2))  # no ONNX conversion exists for SVD


class UsesSvd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 2, 3), SingularValues())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


# ------------------------------------------------------------------------------------------- the happy path
def test_resnet20_passes_parity_and_ort_metrics_match_pytorch(exported, resnet20, data, task):
    artifact, out = exported
    assert artifact.parity is not None and artifact.parity.passed
    assert artifact.parity.samples == 256
    assert artifact.parity.max_abs_diff <= 1e-3 and artifact.parity.agreement >= 0.99
    torch_metrics = evaluate_model(resnet20, data.eval_loader(256), task)
    assert set(artifact.metrics) == {"accuracy", "top5"}
    assert abs(artifact.metrics["accuracy"] - torch_metrics["accuracy"]) <= 0.002
    assert abs(artifact.metrics["top5"] - torch_metrics["top5"]) <= 0.002


def test_artifact_record_describes_the_file(exported):
    artifact, out = exported
    assert (artifact.name, artifact.path, artifact.format, artifact.precision) == (
        "student", "student.onnx", "onnx", "fp32",
    )  # fmt: skip
    assert artifact.sha256 == sha256_file(out)
    assert artifact.size_bytes == out.stat().st_size
    assert artifact.notes == ()
    assert not list(out.parent.glob(f"*{TMP_MARK}"))


def test_metadata_props_let_a_consumer_feed_and_read_the_model(exported, data):
    _, out = exported
    model = onnx.load(str(out))
    props = {p.key: p.value for p in model.metadata_props}
    assert props["preprocessing"] == data.preprocessing.describe()
    assert json.loads(props["input_shape"]) == ["batch", 1, 28, 28]
    assert (
        json.loads(props["class_names"])[0] == "T-shirt/top" and len(json.loads(props["class_names"])) == 10
    )
    assert props["task"] == "classification"
    assert props["edgekd_version"] == edgekd.__version__
    assert props["role"] == "student"
    assert not any(key.startswith("onnxsim.") for key in props)
    assert [i.name for i in model.graph.input] == ["input"] and model.graph.output[0].name == "output"
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [18]


def test_simplified_graph_has_no_identity_nodes_and_batchnorm_is_folded(exported):
    ops = {node.op_type for node in onnx.load(str(exported[1])).graph.node}
    assert "Identity" not in ops and "BatchNormalization" not in ops
    assert "Conv" in ops


@pytest.mark.parametrize("batch", [1, 7])
def test_dynamic_batch_runs_any_batch_size(exported, resnet20, data, batch):
    session = create_session(exported[1], threads=1)
    x = data.example_input(batch)
    y = session.run(None, {"input": x.numpy()})[0]
    with torch.inference_mode():
        ref = resnet20.eval()(x).numpy()
    assert y.shape == (batch, 10)
    np.testing.assert_allclose(y, ref, atol=1e-4)


def test_evaluate_onnx_alone_reproduces_the_artifact_metrics(exported, data, task):
    artifact, out = exported
    assert evaluate_onnx(out, data, task, batch_size=100, threads=1) == pytest.approx(artifact.metrics)


def test_fixed_batch_export_at_opset_17_evaluates_in_chunks(tmp_path, data, task):
    torch.manual_seed(1)
    model = TinyNet()
    cfg = ExportConfig(opset=17, dynamic_batch=False, parity_samples=64)
    artifact = export_onnx(ParityReference(model, data, task), cfg, tmp_path / "teacher.onnx", name="teacher")
    onnx_model = onnx.load(str(tmp_path / "teacher.onnx"))
    assert [d.dim_value for d in onnx_model.graph.input[0].type.tensor_type.shape.dim] == [1, 1, 28, 28]
    assert [o.version for o in onnx_model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    props = {p.key: p.value for p in onnx_model.metadata_props}
    assert json.loads(props["input_shape"]) == [1, 1, 28, 28]
    # a fixed batch of 1 is fed 100-image batches by the predictor, chunked and reassembled
    assert evaluate_onnx(tmp_path / "teacher.onnx", data, task, batch_size=100) == pytest.approx(
        artifact.metrics
    )
    torch_metrics = evaluate_model(model, data.eval_loader(256), task)
    assert artifact.metrics["accuracy"] == pytest.approx(torch_metrics["accuracy"], abs=0.002)


def test_model_training_flag_is_restored(tmp_path, data, task):
    model = TinyNet().train()
    export_onnx(
        ParityReference(model, data, task), ExportConfig(parity_samples=8), tmp_path / "m.onnx", name="m"
    )
    assert model.training


# ------------------------------------------------------------------------------------------- failure paths
def test_parity_failure_raises_gate_error_and_leaves_no_file(tmp_path, data, task):
    out = tmp_path / "student.onnx"
    with pytest.raises(GateError) as info:
        export_onnx(
            ParityReference(ExportCheat(), data, task), ExportConfig(parity_samples=64), out, name="s"
        )
    message = str(info.value)
    assert "\n" not in message
    assert "student.onnx" in message and "max_abs_diff 1" in message and "64 eval inputs" in message
    assert info.value.exit_code == 3
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary left behind either


def test_unexportable_operator_is_named_with_its_layer_and_console_stays_quiet(data, capfd):
    with pytest.raises(EdgekdError) as info:
        torch_to_onnx(UsesSvd(), data.example_input(2), 18, dynamic_batch=True)
    message = str(info.value)
    assert (
        "aten::linalg_svdvals" in message and "layer 'features.1'" in message and "test_export.py" in message
    )
    assert "\n" not in message
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_export_of_a_clean_model_prints_nothing(tmp_path, data, task, capfd):
    export_onnx(
        ParityReference(TinyNet(), data, task), ExportConfig(parity_samples=8), tmp_path / "m.onnx", name="m"
    )
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def _custom_op_model() -> onnx.ModelProto:
    """A valid ONNX model whose operator only a runtime extension provides: onnxsim cannot execute it."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3])
    node = helper.make_node("Frobnicate", ["input"], ["output"], domain="com.example.ops")
    graph = helper.make_graph([node], "custom", [x], [y])
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("com.example.ops", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def test_onnxsim_failure_keeps_the_unsimplified_model_with_a_note():
    model = _custom_op_model()
    before = model.SerializeToString()
    kept, note = simplify_model(model, np.ones((2, 3), np.float32))
    assert kept.SerializeToString() == before
    assert (
        note is not None and note.startswith("onnxsim failed: ") and note.endswith("; shipped unsimplified")
    )
    assert "Frobnicate" in note and "\n" not in note


def test_onnxsim_success_returns_no_note(data):
    raw = torch_to_onnx(TinyNet(), data.example_input(2), 18, dynamic_batch=True)
    simplified, note = simplify_model(raw, data.example_input(4).numpy())
    assert note is None
    assert len(simplified.graph.node) <= len(raw.graph.node)


@pytest.mark.parametrize("kind", ["text", "truncated", "empty", "missing"])
def test_check_onnx_file_rejects_non_onnx_files(tmp_path, exported, kind):
    path = tmp_path / f"{kind}.onnx"
    if kind == "text":
        path.write_text("this is a recipe, not a model\n")
    elif kind == "truncated":
        path.write_bytes(exported[1].read_bytes()[:-1000])
    elif kind == "empty":
        path.write_bytes(b"")
    with pytest.raises(InputError) as info:
        check_onnx_file(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_evaluate_onnx_rejects_a_text_file(tmp_path, data, task):
    path = tmp_path / "model.onnx"
    path.write_text("not onnx")
    with pytest.raises(InputError, match="not a valid ONNX file"):
        evaluate_onnx(path, data, task)


def test_metadata_keys_edgekd_owns_cannot_be_overridden(data, task):
    with pytest.raises(ValueError, match="reserved"):
        build_metadata(data, task, True, {"task": "segmentation"})


def test_session_options_and_predictor_basics(exported, data):
    assert session_options(threads=3).intra_op_num_threads == 3
    assert session_options().inter_op_num_threads == 1
    with pytest.raises(ValueError, match="optimization"):
        session_options(optimization="max")
    predictor = OrtPredictor(create_session(exported[1], threads=1))
    assert predictor.fixed_batch is None
    assert predictor(data.example_input(3)).shape == (3, 10)


# ------------------------------------------------------------------------------------------- the stage entry
def test_export_stage_ships_every_file_in_report_order(tmp_path, small_data):
    """``edgekd.export.run(ctx, upstream)``: teacher, student, variants, then ``student.pt``, as report.json."""
    import dataclasses

    from edgekd import export
    from edgekd.context import RunContext, Upstream, section
    from edgekd.models.student_file import save_student
    from edgekd.recipe.schema import Fp16Config, Int8Config, Recipe, TeacherConfig
    from edgekd.results import DistillResult, ExportResult, ModelSummary, TrainResult, from_dict, to_dict
    from edgekd.rundir import RunDir

    spec = ModelSpec(name="resnet20", args={"width": 4})  # a narrow resnet20 keeps five exports quick
    recipe = Recipe(
        teacher=TeacherConfig(model=spec),
        data=DataConfig(train_limit=1024, eval_limit=128),
        export=ExportConfig(  # random weights: lenient variant limits, the wiring is what is tested
            parity_samples=32,
            int8=Int8Config(calibration_samples=32, min_agreement=0.5),
            fp16=Fp16Config(atol=1.0, min_agreement=0.5),
        ),
    )
    run = RunDir(tmp_path).create()
    torch.manual_seed(0)
    save_student(run.student_pt, build_model(spec, 10, 1), spec, 10, 1, {"recipe": recipe.to_yaml_dict()})
    data = dataclasses.replace(small_data, eval=small_data.eval.head(128))
    task = get_task("classification")
    ctx = RunContext(recipe=recipe, run=run, data=data, task=task, teachers=(TinyNet().eval(),))
    with pytest.raises(EdgekdError, match="DistillResult"):  # checked before anything is exported
        export.run(ctx, Upstream())
    assert not run.teacher_onnx.exists()

    summary = ModelSummary(params=1, macs=1, metrics={"accuracy": 0.5, "top5": 0.9})
    train = TrainResult(epochs=1, best_epoch=1, metrics=summary.metrics, history=(), seconds=0.0)
    upstream = Upstream({"distill": DistillResult(train=train, student=summary)})
    result = export.run(ctx, upstream)

    names = ["teacher.onnx", "student.onnx", "student.int8.onnx", "student.fp16.onnx", "student.pt"]
    assert [a.name for a in result.artifacts] == names == [a.path for a in result.artifacts]
    assert [a.precision for a in result.artifacts] == ["fp32", "fp32", "int8", "fp16", "fp32"]
    assert all(a.parity and a.parity.passed and a.metrics for a in result.artifacts[:4])
    pt = result.artifacts[-1]
    assert (pt.format, pt.parity, pt.metrics) == ("pt", None, summary.metrics)
    assert pt.sha256 == sha256_file(run.student_pt)
    roles = [{p.key: p.value for p in onnx.load(str(run.file(n))).metadata_props}["role"] for n in names[:2]]
    assert roles == ["teacher", "student"]

    assert export.STAGE.name == "export" and export.STAGE.result is ExportResult
    assert export.STAGE.outputs(ctx, result) == [
        run.teacher_onnx,
        run.student_onnx,
        run.int8_onnx,
        run.fp16_onnx,
    ]
    assert export.STAGE.inputs(ctx, upstream) == {
        "student": sha256_file(run.student_pt),
        "export": section(recipe, "export"),
    }
    assert from_dict(ExportResult, to_dict(result)) == result  # what the resume marker stores
