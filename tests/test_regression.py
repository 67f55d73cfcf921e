"""Regression (gaze): metrics on hand-made vectors, the synth_eyes dataset, MobileNetV2 widths, the output KD
loss, ONNX parity on regression values, and the gaze recipe end to end through the CLI on a tiny subset."""

from __future__ import annotations

import json
import math

import pytest
import torch

from edgekd.data import build_data
from edgekd.data.synth_eyes import generate
from edgekd.distill import LOSSES, DistillBatch, LossContext
from edgekd.distill.params import parse_loss_params
from edgekd.errors import InputError
from edgekd.models import build_model
from edgekd.recipe.schema import DataConfig, ExportConfig, LossSpec, ModelSpec
from edgekd.report import validate_report
from edgekd.tasks import get_task
from edgekd.tasks.regression import GAZE_PITCH_YAW, angular_error_deg, gaze_vector
from tests.conftest import REPO, SMALL_RUN, cli

GAZE_RECIPE = REPO / "recipes" / "gaze_mobilenet.yaml"


def gaze_data(**kwargs) -> DataConfig:
    return DataConfig(name="synth_eyes", augment=False, **{"val": 0, **kwargs})  # the builder's own splits


# --- metrics -------------------------------------------------------------------------------------------------


def test_gaze_vector_follows_the_mpiigaze_convention():
    vectors = gaze_vector(torch.tensor([[0.0, 0.0], [math.pi / 2, 0.0], [0.0, math.pi / 2]]))
    expected = torch.tensor([[0.0, 0.0, -1.0], [0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]])
    assert torch.allclose(vectors, expected, atol=1e-6)


def test_angular_error_on_hand_made_vectors():
    predicted = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.1, 0.0], [0.3, -0.2], [0.0, math.pi / 2]])
    target = torch.tensor([[0.0, 0.0], [0.0, math.pi / 2], [0.0, 0.0], [0.3, -0.2], [math.pi / 2, 0.0]])
    errors = angular_error_deg(predicted, target)
    # same angle: 0; a pure yaw or pitch difference d: d in degrees; straight ahead vs up: 90
    assert errors.tolist() == pytest.approx(
        [0.0, 90.0, math.degrees(0.1), 0.0, 90.0], abs=1e-5
    )  # float32 π/2
    # both angles differ: cos θ = cos p1 cos p2 cos(y1 − y2) + sin p1 sin p2, by hand for (0.2, 0.1) vs (−0.1, 0.3)
    by_hand = math.degrees(
        math.acos(math.cos(0.2) * math.cos(-0.1) * math.cos(0.1 - 0.3) + math.sin(0.2) * math.sin(-0.1))
    )
    mixed = angular_error_deg(
        torch.tensor([[0.2, 0.1]], dtype=torch.float64), torch.tensor([[-0.1, 0.3]], dtype=torch.float64)
    )
    assert float(mixed[0]) == pytest.approx(by_hand, abs=1e-9)


def test_meter_gives_mae_and_angular_error_over_batches_like_on_the_whole_set():
    task = get_task("regression")
    task = task.for_data(build_data(gaze_data(train_limit=4, eval_limit=4)))
    assert task.primary_metric == "angular_error_deg" and task.higher_is_better is False
    predicted = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, -0.2]])
    target = torch.tensor([[0.0, 0.1], [0.1, 0.0], [0.0, 0.0]])
    meter = task.meter()
    meter.update(predicted[:2], target[:2])
    meter.update(predicted[2:], target[2:])
    metrics = meter.compute()
    assert metrics["mae"] == pytest.approx((0.1 + 0.0 + 0.2) / 6)
    assert metrics["angular_error_deg"] == pytest.approx((math.degrees(0.1) + 0 + math.degrees(0.2)) / 3)


def test_plain_regression_reports_mae_only_and_checks_shapes():
    task = get_task("regression")
    assert task.primary_metric == "mae"
    meter = task.meter()
    meter.update(torch.tensor([[1.0], [2.0]]), torch.tensor([0.5, 4.0]))  # N×1 outputs, N targets
    assert meter.compute() == {"mae": pytest.approx(1.25)}
    loss = task.criterion()(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]]))
    assert float(loss) == pytest.approx(1.5)  # L1
    with pytest.raises(InputError, match="N×K predictions"):
        meter.update(torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(InputError, match="label_smoothing"):
        task.criterion(0.1)


def test_agreement_counts_samples_within_ten_percent_of_the_reference_spread():
    task = get_task("regression")
    reference = torch.tensor([[0.0, 0.0], [1.0, 2.0], [2.0, 4.0], [3.0, 6.0]])  # spread (std) 1.118, 2.236
    assert task.agreement(reference, reference + 1e-4) == 1.0
    drifted = reference.clone()
    drifted[1, 1] += 0.3  # 13% of that output's spread: this sample disagrees
    drifted[2, 0] += 0.1  # 9%: still agrees
    assert task.agreement(reference, drifted) == pytest.approx(0.75)


# --- the dataset ---------------------------------------------------------------------------------------------


def test_synth_eyes_is_deterministic_shaped_right_and_prefix_stable():
    bundle = build_data(gaze_data(train_limit=300, eval_limit=40))
    again = build_data(gaze_data(train_limit=300, eval_limit=40))
    assert bundle.train.images.shape == (300, 1, 36, 60) and bundle.train.images.dtype == torch.uint8
    assert bundle.train.targets.shape == (300, 2) and bundle.train.targets.dtype == torch.float32
    assert bundle.eval.images.shape == (40, 1, 36, 60) and bundle.target_kind == GAZE_PITCH_YAW
    assert torch.equal(bundle.train.images, again.train.images)
    assert torch.equal(bundle.train.targets, again.train.targets)
    fewer = build_data(gaze_data(train_limit=10, eval_limit=4))  # limits truncate, they do not re-draw
    assert torch.equal(fewer.train.images, bundle.train.images[:10])
    other_seed = build_data(gaze_data(train_limit=10, eval_limit=4, args={"seed": 1}))
    assert not torch.equal(other_seed.train.images, fewer.train.images)
    assert not torch.equal(bundle.eval.images, bundle.train.images[:40])  # train and eval never share draws
    pitch, yaw = bundle.train.targets.abs().max(dim=0).values.tolist()
    assert pitch <= math.radians(25.0) + 1e-6 and yaw <= math.radians(35.0) + 1e-6


def test_sclera_target_gives_binary_masks_of_the_same_images():
    images, _, masks = generate(64, 36, 60, channels=1, seed=0, split=0)
    bundle = build_data(
        DataConfig(name="synth_eyes", args={"target": "sclera"}, train_limit=64, eval_limit=8, val=0)
    )
    assert torch.equal(bundle.train.images, images) and torch.equal(bundle.train.targets, masks)
    assert masks.shape == (64, 36, 60) and set(masks.unique().tolist()) == {0, 1}
    assert bundle.target_kind == "" and bundle.class_names == ("background", "sclera")
    assert 0.05 < masks.float().mean() < 0.5
    sclera = images[:, 0][masks.bool()].float().mean()
    assert sclera > images.float().mean() + 20  # the sclera is the bright part of the image
    colour = build_data(
        DataConfig(
            name="synth_eyes",
            args={"target": "sclera", "channels": 3, "size": 64},
            train_limit=4,
            eval_limit=4,
            val=0,
        )
    )
    assert colour.train.images.shape == (4, 3, 64, 64) and colour.train.targets.shape == (4, 64, 64)


def test_the_iris_moves_with_the_gaze_label():
    images, gaze, _ = generate(256, 36, 60, channels=1, seed=3, split=0)
    grey = images[:, 0].float()
    dark = grey <= grey.flatten(1).quantile(0.05, dim=1)[:, None, None]  # pupil and iris pixels
    xs = torch.arange(60.0).view(1, 1, 60).expand_as(grey)
    centroid_x = (xs * dark).sum(dim=(1, 2)) / dark.sum(dim=(1, 2))
    corr = torch.corrcoef(torch.stack((centroid_x, gaze[:, 1])))[0, 1]
    assert corr < -0.6  # positive yaw looks to the image's left (g_x = −cos p · sin y)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (gaze_data(args={"target": "iris"}), "target: 'iris'"),
        (gaze_data(args={"sise": 32}), "no option 'sise'; did you mean 'size'"),
        (gaze_data(args={"size": [8, 8]}), "size"),
        (DataConfig(name="synth_eyes"), "augment"),  # augment defaults to true: refused for gaze
    ],
)
def test_bad_synth_eyes_options_are_refused(config, message):
    with pytest.raises(InputError, match=message):
        build_data(config)


# --- model, loss, export ---------------------------------------------------------------------------------------


def test_mobilenet_v2_widths_share_module_names_and_regress_two_values():
    models = {
        w: build_model(ModelSpec(name="mobilenet_v2", args={"width_mult": w, "dropout": 0.0}), 2, 1)
        for w in (1.0, 0.25)
    }
    x = torch.randn(3, 1, 36, 60)
    for model in models.values():
        assert model.eval()(x).shape == (3, 2)
    names = [{n for n, _ in m.named_modules()} for m in models.values()]
    assert names[0] == names[1] and "features.6" in names[0]  # FitNets hints name the same modules
    params = [sum(p.numel() for p in m.parameters()) for m in models.values()]
    assert params[1] < params[0] / 5
    with pytest.raises(InputError, match="width_mult"):
        build_model(ModelSpec(name="mobilenet_v2", args={"width_mult": 0}), 2, 1)


@pytest.mark.parametrize(
    ("p", "expected"), [(1, (0.5 + 1.0 + 0.0 + 2.0) / 4), (2, (0.25 + 1.0 + 0.0 + 4.0) / 4)]
)
def test_reg_kd_is_the_mean_l1_or_squared_error_to_the_teacher(p, expected):
    ctx = LossContext(get_task("regression"), 2)
    loss_fn = LOSSES.get("reg_kd")(parse_loss_params(LossSpec(name="reg_kd", p=p)), ctx)
    student = torch.tensor([[0.5, 1.0], [0.0, -2.0]], requires_grad=True)
    teacher = torch.tensor([[0.0, 0.0], [0.0, 0.0]], requires_grad=True)
    loss = loss_fn(DistillBatch(student=student, teachers=[teacher], targets=torch.zeros(2, 2)))
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    assert student.grad is not None and teacher.grad is None
    with pytest.raises(InputError, match="p"):
        parse_loss_params(LossSpec(name="reg_kd", p=3))


def test_onnx_parity_and_ort_metrics_on_regression_values(tmp_path):
    from edgekd.engine.evaluate import evaluate_model
    from edgekd.export import ParityReference, export_onnx

    data = build_data(gaze_data(train_limit=8, eval_limit=64))
    task = get_task("regression", data)
    torch.manual_seed(0)
    model = build_model(ModelSpec(name="mobilenet_v2", args={"width_mult": 0.25}), 2, 1).eval()
    cfg = ExportConfig(parity_samples=64, simplify=False)
    artifact = export_onnx(ParityReference(model, data, task), cfg, tmp_path / "m.onnx")
    assert artifact.parity.passed and artifact.parity.max_abs_diff < 1e-4 and artifact.parity.agreement == 1.0
    pytorch = evaluate_model(model, data.eval_loader(32), task)
    assert set(artifact.metrics) == {"mae", "angular_error_deg"}
    for name, value in pytorch.items():
        assert artifact.metrics[name] == pytest.approx(value, abs=1e-4)


# --- the recipe, end to end through the CLI --------------------------------------------------------------------

TINY = (
    "--set", "data.train_limit=128", "--set", "data.eval_limit=64", "--set", "data.batch_size=32",
    "--set", "data.eval_batch_size=64",
)  # fmt: skip


def test_gaze_recipe_trains_its_teacher_and_compresses_end_to_end(tmp_path):
    teacher_dir = tmp_path / "teacher"
    args = (
        "--set",
        "teacher.checkpoint=null",
        "--set",
        "train.epochs=1",
        "--set",
        "teacher.model.args.width_mult=0.5",
    )
    proc = cli("train", str(GAZE_RECIPE), "--out", str(teacher_dir), *TINY, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "gaze"
    proc = cli(
        "compress", str(GAZE_RECIPE), "--out", str(out), *SMALL_RUN, *TINY,
        "--set", f"teacher.checkpoint={teacher_dir / 'teacher.pt'}",
        "--set", "teacher.model.args.width_mult=0.5",
        "--set", "prune.iterative_steps=1",
        "--set", "distill.epochs=2",  # epoch 1: fitnet hints; epoch 2: reg_kd
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    validate_report(report)
    assert report["task"] == "regression"
    for role in ("teacher", "student"):
        assert set(report["models"][role]["metrics"]) == {"mae", "angular_error_deg"}
    assert "angular_error_deg" in report["compression"]["metric_delta"]
    student = {a["name"]: a for a in report["artifacts"]}["student.onnx"]
    assert student["parity"]["passed"] and student["parity"]["agreement"] == 1.0
    assert student["metrics"]["angular_error_deg"] == pytest.approx(
        report["models"]["student"]["metrics"]["angular_error_deg"], abs=1e-3
    )
    assert [loss["name"] for loss in report["recipe"]["distill"]["losses"]] == ["ce", "fitnet", "reg_kd"]
    assert "angular_error_deg" in (out / "report.md").read_text()
