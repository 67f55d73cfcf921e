"""The latency model (edgekd.latency): layers read from ONNX, micro-models, fitting, the cache and its keys,
``edgekd calibrate`` / ``edgekd predict``, the report's ``predicted_ms``, and a calibration over real SSH.

Timing is real (ONNX Runtime through the probe), never asserted against the clock: the tests check behaviour
(keys, staleness, shapes of answers, monotonicity of a fitted table, exit codes)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from edgekd.latency import CalibrationConfig, LayerSpec, architecture_hash, lookup, read_layers
from edgekd.latency.cache import CacheKey, store
from edgekd.latency.calibrate import calibrate_onnx, calibrate_torch, model_key
from edgekd.latency.kinds import OP_KINDS, kind_of
from edgekd.latency.predict import attach_predictions, predicted_p50
from edgekd.latency.predictor import LatencyModel, Sample, fit_table, fit_whole_graph, nnls, whole_graph_term
from edgekd.profile import profile_model
from edgekd.recipe.schema import ProfileConfig
from edgekd.report.schema import Report
from tests.test_ssh_target import sshd  # noqa: F401  (the loopback sshd fixture)

QUICK = CalibrationConfig(quick=True, holdout=0, timeout_s=300)


def tiny_onnx(width: int = 16, hw: int = 12) -> onnx.ModelProto:
    """conv+relu -> conv -> add (residual) -> relu -> global pool -> gemm head: three prunable layers."""
    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.1, name)

    inits = [init("w1", width, 3, 3, 3), init("b1", width), init("w2", width, width, 3, 3), init("b2", width)]
    inits += [init("wf", 10, width), init("bf", 10)]
    nodes = [
        helper.make_node(
            "Conv", ["input", "w1", "b1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1] * 4
        ),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Add", ["c2", "r1"], ["a"]),
        helper.make_node("Relu", ["a"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["output"], name="fc", transB=1),
    ]
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, hw, hw])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 10])
    model = helper.make_model(
        helper.make_graph(nodes, "tiny", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    model.metadata_props.add(key="input_shape", value=json.dumps([1, 3, hw, hw]))
    onnx.checker.check_model(model)
    return model


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    directory = tmp_path / "latency-cache"
    monkeypatch.setenv("EDGEKD_LATENCY_CACHE", str(directory))
    return directory


# ----------------------------------------------------------------------------------------------- the graph
def test_layers_are_read_fused_with_heads_and_the_graph_input_marked():
    conv1, conv2, fc = read_layers(tiny_onnx())
    assert (conv1.kind, conv1.cin, conv1.cout, conv1.post, conv1.fixed_in) == ("conv", 3, 16, ("Relu",), True)
    assert (conv2.post, conv2.in_hw, conv2.fixed_out) == (("Add", "Relu"), (12, 12), False)
    assert (fc.kind, fc.cin, fc.cout, fc.fixed_out) == ("linear", 16, 10, True)


def test_architecture_hash_ignores_widths_and_sees_the_input_size():
    wide, narrow = read_layers(tiny_onnx(16)), read_layers(tiny_onnx(13))
    assert architecture_hash(wide, [1, 3, 12, 12]) == architecture_hash(narrow, [1, 3, 12, 12])
    assert architecture_hash(read_layers(tiny_onnx(16, hw=20)), [1, 3, 20, 20]) != architecture_hash(
        wide, [1, 3, 12, 12]
    )


@pytest.mark.parametrize("kind", OP_KINDS.names())
def test_every_kind_builds_a_micro_model_onnxruntime_runs(kind):
    import onnxruntime as ort

    layer = LayerSpec("x", kind, 8, 8, kernel=(3, 3), pads=(1, 1, 1, 1), in_hw=(6, 6), out_hw=(6, 6))
    if kind == "linear":
        layer = LayerSpec("x", "linear", 12, 5, in_hw=(1, 1), out_hw=(1, 1), post=("Relu",))
    elif kind == "depthwise":
        layer = replace(layer, groups=8, post=("Add", "Clip"))
    elif kind == "grouped":
        layer = replace(layer, groups=2)
    micro = kind_of(layer).micro(layer)
    session = ort.InferenceSession(micro.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {i.name: np.zeros([d for d in i.shape], np.float32) for i in session.get_inputs()}
    (out,) = session.run(None, feed)
    assert out.shape[1] == layer.cout
    assert len(set(kind_of(layer).grid(layer, CalibrationConfig().grid))) >= 3


# ------------------------------------------------------------------------------------------------ fitting
def test_nnls_is_non_negative_and_exact_on_consistent_data():
    a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert np.allclose(nnls(a, a @ np.array([2.0, 3.0])), [2.0, 3.0])
    assert (nnls(a, np.array([-1.0, 2.0, 1.0])) >= 0).all()


def test_a_fitted_table_is_monotone_in_width_within_an_alignment_class():
    layer = read_layers(tiny_onnx(64))[1]  # 64 -> 64, 3x3 at 12x12
    samples = [
        Sample(ci, co, 0.01 + 2e-8 * layer.with_widths(ci, co).macs * (1.3 if co % 8 else 1.0))
        for ci in (16, 32, 48, 64)
        for co in (16, 23, 32, 41, 48, 64)
    ]
    fit = fit_table("t", layer, samples, q=8)
    aligned = [fit.predict(layer.with_widths(64, co), 8) for co in range(8, 65, 8)]
    assert aligned == sorted(aligned) and aligned[0] < aligned[-1]
    assert fit.predict(layer.with_widths(64, 41), 8) > fit.predict(layer.with_widths(64, 40), 8)
    assert all(c >= 0 for c in fit.coef)


def test_the_whole_graph_term_prices_reorders_around_off_block_layers():
    """Whole models where every off-block layer costs 1e-6 ms per activation element reordered (on top of
    1.1x the layer terms and 0.2 ms): the fit recovers the three and picks the block that explains them."""
    conv1, conv2, fc = read_layers(tiny_onnx(64))
    widths = (64, 48, 40, 37, 21)
    models = [[conv1.with_widths(3, w), conv2.with_widths(w, w), fc.with_widths(w, 10)] for w in widths]
    sums = [float(sum(layer.macs for layer in m)) * 1e-7 for m in models]
    reorders = [sum(layer.misaligned_elems(8) for layer in m) for m in models]
    measured = [1.1 * s + 1e-6 * r + 0.2 for s, r in zip(sums, reorders, strict=True)]
    term = fit_whole_graph(sums, models, measured)
    assert term.block == 8 and term.alpha == pytest.approx(1.1, rel=1e-6)
    assert term.gamma == pytest.approx(1e-6, rel=1e-6) and term.beta == pytest.approx(0.2, rel=1e-6)
    aligned = [(1.0, 0.0), (2.0, 0.0), (3.0, 0.0)]  # no model off the block: no gamma to fit
    alpha, gamma, beta = whole_graph_term([p for p, _ in aligned], [2 * p + 1 for p, _ in aligned])
    assert (alpha, gamma) == (pytest.approx(2.0), 0.0) and beta == pytest.approx(1.0)


def test_a_layer_is_off_block_only_where_pruning_can_move_it():
    first, second = read_layers(tiny_onnx(64))[:2]
    assert first.fixed_in and first.misaligned_elems(8) == 0  # 3 input channels: the image's, not pruned
    assert second.with_widths(64, 40).misaligned_elems(8) == 0
    assert second.with_widths(64, 40).misaligned_elems(16) > 0  # 40 is off a 16-wide block
    assert second.with_widths(37, 64).misaligned_elems(8) == 37 * 12 * 12 + 64 * 12 * 12


# --------------------------------------------------------------------------------------------- the cache
def _model(key: CacheKey) -> LatencyModel:
    layers = tuple(read_layers(tiny_onnx()))
    return LatencyModel(key.__dict__, layers, {}, tuple(layer.table_key() for layer in layers), 8, 1.0, 0.5)


def test_cache_key_covers_device_runtime_threads_batch_and_model(tmp_path):
    key = CacheKey("cpu A", "1.32.0", "CPUExecutionProvider", 1, 1, "abc")
    others = [
        replace(key, **{f: v})
        for f, v in [
            ("device", "cpu B"),
            ("onnxruntime", "1.31.0"),
            ("threads", 2),
            ("batch", 4),
            ("model", "abd"),
        ]
    ]
    assert len({k.filename() for k in [key, *others]}) == 6
    store(_model(key), key, tmp_path)
    found = lookup(key, tmp_path)
    assert found.model is not None and found.model.key == key.__dict__ and found.stale == ()


def test_a_stale_cache_entry_is_named_and_not_reused(tmp_path):
    old = CacheKey("cpu A", "1.31.0", "CPUExecutionProvider", 1, 1, "abc")
    store(_model(old), old, tmp_path)
    found = lookup(replace(old, onnxruntime="1.32.0"), tmp_path)
    assert found.model is None and "onnxruntime '1.31.0' -> '1.32.0'" in found.stale[0]
    tampered = replace(old, format=0)  # a file whose stored key no longer matches its name
    path = store(_model(tampered), tampered, tmp_path)
    path.rename(tmp_path / old.filename())
    assert lookup(old, tmp_path).model is None


# ---------------------------------------------------------------------------------- calibrate and predict
def test_calibrate_then_predict_through_the_cli(tmp_path, cache, edgekd_main):
    model = tmp_path / "tiny.onnx"
    onnx.save(tiny_onnx(), str(model))
    code, out, err = edgekd_main("calibrate", str(model), "--quick", "--json")
    assert code == 0, err
    entry = json.loads(out)
    assert {"target", "seconds", "samples", "error"} <= set(entry) and entry["target"] == "local"
    assert set(entry["error"]) == {"within_10pct", "mape"} and entry["samples"] > 10
    assert Path(entry["cache_file"]).parent == cache
    student = tmp_path / "student.onnx"  # same architecture at other widths: the teacher's model serves it
    onnx.save(tiny_onnx(11), str(student))
    code, out, err = edgekd_main("predict", str(student), "--json")
    assert code == 0, err
    answer = json.loads(out)
    assert answer["p50_ms"] > 0 and answer["layers"] == 3 and answer["cache_file"] == entry["cache_file"]
    code, out, err = edgekd_main("predict", str(student))
    assert code == 0 and "predicted p50" in out
    code, _out, err = edgekd_main("predict", str(student), "--threads", "2")
    assert code == 2 and "edgekd calibrate" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--target", "nowhere"), "unknown target 'nowhere'"),
        (("--threads", "0"), "--threads"),
    ],
)
def test_bad_calibrate_input_is_one_line_and_exit_2(tmp_path, cache, edgekd_main, args, message):
    model = tmp_path / "tiny.onnx"
    onnx.save(tiny_onnx(), str(model))
    code, _out, err = edgekd_main("calibrate", str(model), "--quick", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["calibrate", "predict"])
def test_a_file_that_is_not_onnx_is_bad_input(tmp_path, cache, edgekd_main, command):
    bogus = tmp_path / "model.onnx"
    bogus.write_text("not a model")
    code, _out, err = edgekd_main(command, str(bogus))
    assert code == 2 and "not a valid ONNX file" in err and len(err.strip().splitlines()) == 1
    text = tmp_path / "notes.txt"
    text.write_text("x")
    code, _out, err = edgekd_main("calibrate", str(text))
    assert code == 2 and "recipe (.yaml) or an ONNX file" in err


def test_a_torch_calibration_records_its_held_out_error(cache):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 24, 3, padding=1, stride=2),
        nn.BatchNorm2d(24),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(24, 5),
    ).eval()
    result = calibrate_torch(net, torch.randn(1, 3, 16, 16), "local", replace(QUICK, holdout=2))
    entry = result.stage_entry()
    assert set(entry) == {"target", "seconds", "samples", "error"}
    assert result.model.error["n"] == 2 and 0 <= entry["error"]["within_10pct"] <= 1
    # the teacher, two rounded uniform variants and one unrounded (quick), which prices misaligned widths
    assert result.model.fit["whole_models"] == {"fit": 4, "holdout": 2}
    assert result.model.block in (8, 16) and result.model.gamma >= 0
    assert result.model.fit["teacher_ms"] > 0  # the unpruned model's measured p50: a latency budget's base


# ------------------------------------------------------------------------------------------------ report
def test_the_report_shows_predicted_beside_measured(tmp_path, cache):
    from edgekd.results import Artifact

    path = tmp_path / "student.onnx"
    onnx.save(tiny_onnx(), str(path))
    profiles = profile_model(path, ProfileConfig(threads=[1], runs=5, warmup=1, op_profile=False))
    artifact = Artifact.of_file(path, profiles=tuple(profiles))
    assert predicted_p50(path, profiles[0]) is None  # nothing cached yet
    calibrate_onnx(onnx.load(str(path)), "local", QUICK)
    report = {"artifacts": [{"profiles": [{"latency_ms": {}}]}]}
    attach_predictions(report, tmp_path, [artifact])
    assert report["artifacts"][0]["profiles"][0]["predicted_ms"]["p50"] > 0
    fields = Report.model_fields["artifacts"].annotation
    assert "predicted_ms" in fields.__args__[0].model_fields["profiles"].annotation.__args__[0].model_fields


def test_the_report_schema_checks_stages_calibrate():
    from edgekd.report.schema import Report as R

    good = {"seconds": 1.0, "target": "local", "samples": 9, "error": {"within_10pct": 0.9, "mape": 0.04}}
    R._calibrate({"calibrate": R.model_fields["stages"].annotation.__args__[1].model_validate(good)})
    bad = R.model_fields["stages"].annotation.__args__[1].model_validate({"seconds": 1.0, "target": "x"})
    with pytest.raises(ValueError, match="calibrate"):
        R._calibrate({"calibrate": bad})


# -------------------------------------------------------------------------------------------------- ssh
def test_calibrate_over_ssh_caches_a_model_local_can_use(tmp_path, cache, sshd):  # noqa: F811
    model = tiny_onnx()
    url = sshd.url()
    result = calibrate_onnx(model, url, QUICK)
    assert result.path.parent == cache and result.stage_entry()["target"] == url
    # the same machine reached two ways is one device: local finds the model calibrated over ssh
    assert lookup(model_key(model, "local", 1, 1), cache).model is not None
