"""INT8 and FP16 artifacts with real ONNX Runtime quantization/conversion of the shipped trained teacher.

The FP32 file is the shipped Fashion-MNIST ResNet-20 teacher exported once per module (a trained model, so
accuracies and agreements mean something); subsets are small (256 calibration images, 512 eval images) so
each conversion takes a few seconds. No wall-clock asserts.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper

from edgekd.data import DataBundle, build_data
from edgekd.errors import GateError, InputError
from edgekd.export import ParityReference, export_onnx
from edgekd.export.fp16 import FP16_ATOL, export_fp16
from edgekd.export.quantize import INT8_MIN_AGREEMENT, Calibration, CalibrationReader, export_int8
from edgekd.io import TMP_MARK
from edgekd.models import build_model
from edgekd.models.checkpoint import extract_state_dict, load_checkpoint
from edgekd.recipe.schema import DataConfig, ExportConfig, ModelSpec
from edgekd.tasks import get_task

TEACHER = Path(__file__).resolve().parents[1] / "recipes" / "teachers" / "fmnist_resnet20.pt"


@pytest.fixture(scope="module")
def data() -> DataBundle:
    return build_data(DataConfig(train_limit=512, eval_limit=512, val=0))  # the whole 512 calibrate


@pytest.fixture(scope="module")
def task():
    return get_task("classification")


@pytest.fixture(scope="module")
def teacher() -> torch.nn.Module:
    model = build_model(ModelSpec(name="resnet20"), 10, 1)
    model.load_state_dict(extract_state_dict(load_checkpoint(TEACHER)))
    return model.eval()


@pytest.fixture(scope="module")
def fp32(tmp_path_factory, teacher, data, task):
    out = tmp_path_factory.mktemp("run") / "student.onnx"
    artifact = export_onnx(ParityReference(teacher, data, task), ExportConfig(), out, name="student.onnx")
    return out, artifact


def _ops(path) -> Counter:
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def test_int8_is_static_qdq_per_channel_and_keeps_accuracy(fp32, teacher, data, task):
    path, fp32_art = fp32
    out = path.with_name("student.int8.onnx")
    art = export_int8(path, ParityReference(teacher, data, task), out, Calibration(samples=256))

    assert (art.name, art.path, art.precision, art.format) == (out.name, out.name, "int8", "onnx")
    assert out.is_file() and art.size_bytes == out.stat().st_size < 0.4 * fp32_art.size_bytes
    assert art.parity.passed and art.parity.samples == 256 and art.parity.agreement >= INT8_MIN_AGREEMENT
    assert math.isfinite(art.parity.max_abs_diff) and art.parity.max_abs_diff > 0  # really quantized
    assert abs(art.metrics["accuracy"] - fp32_art.metrics["accuracy"]) <= 0.02
    assert any("256 training images" in n for n in art.notes)

    model = onnx.load(str(out))
    ops = _ops(out)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > ops["QuantizeLinear"]  # QDQ, not QOperator
    assert "QLinearConv" not in ops
    inits = {i.name: i for i in model.graph.initializer}
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    weight_dq = next(n for n in model.graph.node if n.output[0] == conv.input[1])
    weight, scale = inits[weight_dq.input[0]], numpy_helper.to_array(inits[weight_dq.input[1]])
    assert weight.data_type == TensorProto.INT8 and scale.shape == (weight.dims[0],)  # per-channel S8
    act_q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
    assert inits[act_q.input[2]].data_type == TensorProto.UINT8  # U8 activations
    props = {p.key: p.value for p in model.metadata_props}
    assert props["precision"] == "int8" and props["calibration_samples"] == "256"
    assert "preprocessing" in props and not any(k.startswith("onnx.") for k in props)
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT


def test_fp16_keeps_float32_io_and_parity(fp32, teacher, data, task):
    path, fp32_art = fp32
    out = path.with_name("student.fp16.onnx")
    art = export_fp16(path, ParityReference(teacher, data, task), out)

    assert art.precision == "fp16" and art.parity.passed and art.parity.agreement >= 0.99
    assert 0 < art.parity.max_abs_diff <= FP16_ATOL
    assert abs(art.metrics["accuracy"] - fp32_art.metrics["accuracy"]) <= 0.005
    assert 0.4 * fp32_art.size_bytes < art.size_bytes < 0.6 * fp32_art.size_bytes
    model = onnx.load(str(out))
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    weight = next(i for i in model.graph.initializer if i.name == conv.input[1])
    assert weight.data_type == TensorProto.FLOAT16
    assert {p.key: p.value for p in model.metadata_props}["precision"] == "fp16"


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_parity_failure_writes_nothing(fp32, data, task, precision):
    """An untrained reference network disagrees with the trained file: the gate fails, no file appears."""
    path, _ = fp32
    torch.manual_seed(0)
    other = build_model(ModelSpec(name="resnet20"), 10, 1).eval()
    out = path.with_name(f"wrong.{precision}.onnx")
    convert = export_int8 if precision == "int8" else export_fp16
    args = (Calibration(samples=32),) if precision == "int8" else ()
    with pytest.raises(
        GateError, match=rf"{precision.upper()} parity vs the PyTorch student failed.*not written"
    ):
        convert(path, ParityReference(other, data, task), out, *args)
    assert not out.exists() and not list(out.parent.glob(f"*{TMP_MARK}"))


def test_missing_fp32_file_is_input_error(tmp_path, teacher, data, task):
    with pytest.raises(InputError, match="ONNX file not found"):
        export_int8(tmp_path / "nope.onnx", ParityReference(teacher, data, task), tmp_path / "x.int8.onnx")
    with pytest.raises(InputError, match="ONNX file not found"):
        export_fp16(tmp_path / "nope.onnx", ParityReference(teacher, data, task), tmp_path / "x.fp16.onnx")


@pytest.mark.parametrize(
    ("fixed_batch", "samples", "expected"),
    [(None, 100, [32, 32, 32, 4]), (None, 10_000, [32] * 16), (1, 3, [1, 1, 1]), (4, 10, [4, 4])],
)
def test_calibration_reader_feeds_training_images(data, fixed_batch, samples, expected):
    reader = CalibrationReader(data, "input", fixed_batch, samples, seed=0)
    batches = []
    while (feed := reader.get_next()) is not None:
        batches.append(feed["input"])
    reader.close()
    assert [len(b) for b in batches] == expected and reader.used == sum(expected)
    assert all(b.dtype == np.float32 and b.shape[1:] == (1, 28, 28) for b in batches)
    again = CalibrationReader(data, "input", fixed_batch, samples, seed=0)
    assert np.array_equal(again.get_next()["input"], batches[0])  # seeded: a rerun calibrates identically
    again.close()


def test_saturating_cpu_reads_the_vnni_flag(tmp_path, monkeypatch):
    """x86 without VNNI gets 7-bit weights by default; VNNI CPUs and ARM keep 8-bit weights."""
    import platform

    from edgekd.export.quantize import saturating_cpu

    info = tmp_path / "cpuinfo"
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    assert saturating_cpu(info) is True
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    assert saturating_cpu(info) is False
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert saturating_cpu(tmp_path / "missing") is False
