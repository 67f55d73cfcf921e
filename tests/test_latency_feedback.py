"""Closing the latency loop (issue 14, items 4-5): measured students correct the latency model, a missed budget
re-prunes when asked, and the report recommends the fastest precision within tolerance per setting.

The latency model here is the real predictor fitted on constructed timings (as in test_allocate), so what is
checked is the arithmetic of the correction and the recommendation, never this machine's speed. The
end-to-end run over SSH is in test_ssh_target.py."""

from __future__ import annotations

import dataclasses
import json

import pytest
from pydantic import ValidationError

from edgekd.latency import read_layers
from edgekd.latency.feedback import aim_for, anchors, bias_at, expected_ms, record_measurement
from edgekd.latency.variants import prune_widths, to_onnx, uniform
from edgekd.recipe.schema import Recipe
from edgekd.report.precision import MetricRule, recommend_precision
from edgekd.results import Artifact, LatencyStats, Profile
from tests.test_allocate import _aligned_latency_model, random_images, tiny_net


@pytest.fixture()
def cached_model(tmp_path):
    """A fitted model whose teacher measured 2x its prediction, written where a cache would hold it."""
    net, data = tiny_net(), random_images(16)
    example = data.example_input()
    model = _aligned_latency_model(net, example)
    teacher_predicted = model.predict([(layer.cin, layer.cout) for layer in model.layers])
    model = dataclasses.replace(model, fit={"teacher_ms": 2.0 * teacher_predicted})
    path = tmp_path / "model.json"
    path.write_text(json.dumps(model.to_json()))
    return net, example, model, path


def test_with_only_the_teacher_measured_the_bias_is_its_ratio_everywhere(cached_model):
    _, _, model, _ = cached_model
    (teacher,) = anchors(model)
    assert teacher.bias == pytest.approx(2.0)
    assert bias_at(model, 0.01 * teacher.predicted_ms) == pytest.approx(2.0)
    assert aim_for(model, 3.0) == pytest.approx(1.5, rel=1e-6)  # what the prune stage always aimed at


def test_a_measured_student_corrects_the_model_near_it_and_is_kept_in_the_cache(cached_model):
    net, example, model, path = cached_model
    student = read_layers(to_onnx(prune_widths(net, example, uniform(0.5)), example))
    predicted = model.predict_layers(student)
    updated = record_measurement(path, student, measured_ms=3.0 * predicted)  # slower than the teacher says
    teacher_predicted = anchors(model)[0].predicted_ms
    assert bias_at(updated, predicted) == pytest.approx(3.0)
    assert bias_at(updated, teacher_predicted) == pytest.approx(2.0)
    midway = 0.5 * (predicted + teacher_predicted)
    assert bias_at(updated, midway) == pytest.approx(2.5)  # linear in the prediction between anchors
    assert expected_ms(updated, 0.5 * predicted) == pytest.approx(1.5 * predicted)  # held beyond the last
    aim = aim_for(updated, 3.0 * predicted)  # a budget the first student just missed
    assert aim == pytest.approx(predicted, rel=1e-6)
    reloaded = json.loads(path.read_text())
    assert reloaded["fit"]["measured"] == [{"predicted_ms": predicted, "measured_ms": 3.0 * predicted}]
    assert reloaded["fit"]["teacher_ms"] == model.fit["teacher_ms"]


def test_a_measurement_of_another_architecture_is_refused(cached_model, tmp_path):
    import torch
    from torch import nn

    _, _, _, path = cached_model
    other = nn.Sequential(nn.Conv2d(3, 8, 5), nn.Flatten(), nn.LazyLinear(5)).eval()
    example = torch.randn(1, 3, 16, 16)
    other(example)
    before = path.read_text()
    with pytest.raises(ValueError, match="does not have this latency model's layers"):
        record_measurement(path, read_layers(to_onnx(other, example)), 1.0)
    assert path.read_text() == before


def test_refine_needs_the_budget_s_setting_profiled():
    base = {"task": "classification", "teacher": {"model": {"name": "resnet20"}}}
    prune = {"target": "latency", "latency": {"target": "local", "threads": 2, "refine": True}}
    with pytest.raises(ValidationError, match="prune.latency.refine needs the student timed on local at 2"):
        Recipe(**base, prune=prune, profile={"threads": [1]})
    assert Recipe(**base, prune=prune, profile={"threads": [2]}).prune.latency.refine


# -- which precision to ship ----------------------------------------------------------------------------------


def _artifact(name: str, precision: str, accuracy: float, p50s: dict[tuple[str, int], float]) -> Artifact:
    profiles = tuple(
        Profile(target, {}, threads, 1, LatencyStats(ms, ms, ms, ms, 0.0, ms, ms), 1.0, 1.0, 10)
        for (target, threads), ms in p50s.items()
    )
    return Artifact(name, name, "onnx", precision, "0", 1, metrics={"accuracy": accuracy}, profiles=profiles)


def test_the_fastest_file_within_tolerance_is_recommended_per_setting():
    """INT8 wins where it is faster (the wide-layer CPU), FP32 where INT8 is slower; FP16 is too lossy."""
    files = [
        _artifact("teacher.onnx", "fp32", 0.93, {("local", 1): 4.0}),
        _artifact("student.onnx", "fp32", 0.920, {("local", 1): 2.0, ("pi5", 4): 1.0}),
        _artifact("student.int8.onnx", "int8", 0.915, {("local", 1): 0.5, ("pi5", 4): 1.4}),
        _artifact("student.fp16.onnx", "fp16", 0.880, {("local", 1): 0.4}),
    ]
    rows = recommend_precision(files, MetricRule("accuracy", True, 0.01))
    by_setting = {(r["target"], r["threads"]): r for r in rows or []}
    assert by_setting[("local", 1)]["artifact"] == "student.int8.onnx"
    assert by_setting[("local", 1)]["speedup_over_fp32"] == pytest.approx(4.0)
    assert by_setting[("pi5", 4)]["artifact"] == "student.onnx"
    fp16 = next(c for c in by_setting[("local", 1)]["candidates"] if c["artifact"] == "student.fp16.onnx")
    assert not fp16["eligible"] and "4.35% worse than FP32" in fp16["reason"]
    assert "teacher.onnx" not in {c["artifact"] for c in by_setting[("local", 1)]["candidates"]}


def test_a_lower_is_better_metric_and_a_lone_fp32_student():
    fp32 = _artifact("student.onnx", "fp32", 0.0, {("local", 1): 2.0})
    fp32 = dataclasses.replace(fp32, metrics={"mae": 0.100})
    int8 = dataclasses.replace(
        _artifact("student.int8.onnx", "int8", 0.0, {("local", 1): 1.0}), metrics={"mae": 0.104}
    )
    (row,) = recommend_precision([fp32, int8], MetricRule("mae", False, 0.05)) or []
    assert row["artifact"] == "student.int8.onnx"  # 4% more error, within 5%
    (row,) = recommend_precision([fp32, int8], MetricRule("mae", False, 0.01)) or []
    assert row["artifact"] == "student.onnx"
    assert recommend_precision([fp32], MetricRule("mae", False, 0.05)) is None
