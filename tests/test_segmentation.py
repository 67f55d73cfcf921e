"""Segmentation: metrics on hand-made masks, paired augmentation, the datasets, U-Net pruning and export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekd.data import build_data
from edgekd.data.base import IGNORE_LABEL, augment_pair
from edgekd.errors import InputError
from edgekd.recipe.schema import DataConfig, ExportConfig, ModelSpec, PruneConfig
from edgekd.tasks import get_task
from edgekd.tasks.segmentation import SegmentationMeter, segmentation_metrics


def one_hot_logits(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """N×C×H×W logits whose argmax is ``labels``."""
    return torch.nn.functional.one_hot(labels, num_classes).permute(0, 3, 1, 2).float()


# ── metrics ─────────────────────────────────────────────────────────────────────────────────────────────────


def test_miou_excludes_classes_absent_from_target_and_prediction():
    target = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1]]])
    pred = torch.tensor([[[0, 0, 1, 1], [0, 1, 1, 1]]])
    meter = SegmentationMeter()
    meter.update(one_hot_logits(pred, 4), target)  # classes 2 and 3 exist in the model but nowhere here
    m = meter.compute()
    iou0, iou1 = 3 / 4, 4 / 5
    assert m["miou"] == pytest.approx((iou0 + iou1) / 2)
    assert m["pixel_accuracy"] == pytest.approx(7 / 8)
    # multi-class Dice: mean over the two present classes
    assert m["dice"] == pytest.approx((2 * 3 / (2 * 3 + 1) + 2 * 4 / (2 * 4 + 1)) / 2)


def test_class_only_predicted_counts_with_iou_zero():
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    pred = torch.tensor([[[0, 0], [0, 2]]])
    meter = SegmentationMeter()
    meter.update(one_hot_logits(pred, 3), target)
    assert meter.compute()["miou"] == pytest.approx((3 / 4 + 0.0) / 2)


def test_binary_dice_is_foreground_dice_and_ignore_index_counts_nowhere():
    target = torch.tensor([[[1, 1, 0, IGNORE_LABEL]]])
    pred = torch.tensor([[[1, 0, 0, 1]]])  # the wrong prediction on the ignored pixel must not matter
    meter = SegmentationMeter()
    meter.update(one_hot_logits(pred, 2), target)
    m = meter.compute()
    assert m["dice"] == pytest.approx(2 * 1 / (2 * 1 + 0 + 1))
    assert m["pixel_accuracy"] == pytest.approx(2 / 3)
    assert m["miou"] == pytest.approx((1 / 2 + 1 / 2) / 2)


def test_metrics_do_not_depend_on_batching():
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (6, 8, 8), generator=gen)
    logits = torch.randn(6, 5, 8, 8, generator=gen)
    whole, split = SegmentationMeter(), SegmentationMeter()
    whole.update(logits, target)
    for i in range(0, 6, 4):
        split.update(logits[i : i + 4], target[i : i + 4])
    assert whole.compute() == split.compute()


def test_meter_rejects_out_of_range_labels_and_wrong_shapes():
    meter = SegmentationMeter()
    with pytest.raises(InputError, match="class 7"):
        meter.update(torch.zeros(1, 3, 2, 2), torch.full((1, 2, 2), 7))
    with pytest.raises(InputError, match="N×C×H×W"):
        meter.update(torch.zeros(1, 3), torch.zeros(1, dtype=torch.long))
    assert segmentation_metrics(None) == {"miou": 0.0, "dice": 0.0, "pixel_accuracy": 0.0}


def test_task_contract():
    task = get_task("segmentation")
    assert task.primary_metric == "miou" and task.dense_output
    logits = torch.randn(2, 3, 4, 4)
    other = logits.clone()
    other[0, :, 0, 0] = torch.tensor([0.0, 0.0, 0.0]) + (1 - logits[0, :, 0, 0].softmax(0)) * 10
    assert task.agreement(logits, logits) == 1.0
    assert task.agreement(logits, other) == pytest.approx(31 / 32)
    labels = torch.full((2, 4, 4), IGNORE_LABEL)
    labels[:, 0, 0] = 1
    assert task.criterion()(logits, labels) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits[:, :, 0, 0], labels[:, 0, 0]))
    )


# ── paired augmentation ─────────────────────────────────────────────────────────────────────────────────────


def test_augmentation_moves_masks_with_their_images():
    gen = torch.Generator().manual_seed(3)
    images = torch.randint(1, 200, (16, 1, 12, 10), dtype=torch.uint8, generator=gen)
    masks = images[:, 0].clone()  # the mask is the image: after augmentation they must still coincide
    out, out_masks = augment_pair(images, masks, gen)
    assert out_masks.shape == masks.shape and out_masks.dtype == torch.uint8
    padded = out_masks == IGNORE_LABEL
    assert padded.any() and torch.equal(out[:, 0][~padded], out_masks[~padded])
    assert (out[:, 0][padded] == 0).all()  # shifted-in border: black image, ignored label
    labels = torch.arange(16)
    assert augment_pair(images, labels, gen)[1] is labels  # class labels pass through


def test_loader_serves_uint8_masks_as_class_indices():
    data = build_data(DataConfig(name="fashion_scenes", train_limit=8, eval_limit=4))
    images, targets = next(iter(data.train_loader(4, augment=True, seed=0)))
    assert targets.dtype == torch.int64 and targets.shape == (4, 64, 64)
    assert images.shape == (4, 1, 64, 64)


# ── datasets ────────────────────────────────────────────────────────────────────────────────────────────────


def test_fashion_scenes_deterministic_shaped_and_limit_independent():
    cfg = {"name": "fashion_scenes", "args": {"canvas": 48, "garments": [1, 3], "seed": 5}, "val": 0}
    a = build_data(DataConfig(**cfg, train_limit=12, eval_limit=6))
    b = build_data(DataConfig(**cfg, train_limit=6, eval_limit=6))
    c = build_data(DataConfig(**{**cfg, "args": {**cfg["args"], "seed": 6}}, train_limit=6, eval_limit=6))
    assert a.train.images.shape == (12, 1, 48, 48) and a.train.targets.shape == (12, 48, 48)
    assert a.num_classes == 11 and a.class_names[0] == "background" and len(a.class_names) == 11
    assert torch.equal(a.train.images[:6], b.train.images) and torch.equal(
        a.train.targets[:6], b.train.targets
    )
    assert not torch.equal(b.train.images, c.train.images)
    assert not torch.equal(a.train.images[:6], a.eval.images)  # eval scenes come from the test images
    labels = a.train.targets
    assert int(labels.max()) <= 10 and (labels == 0).any() and (labels > 0).any()
    garment = labels > 0
    assert (a.train.images[:, 0][garment] > 24).all()  # labelled pixels are the garments' bright pixels


def test_fashion_scenes_rejects_bad_options():
    with pytest.raises(InputError, match="no option 'canvs'"):
        build_data(DataConfig(name="fashion_scenes", args={"canvs": 64}))
    with pytest.raises(InputError, match="garments"):
        build_data(DataConfig(name="fashion_scenes", args={"garments": [3, 1]}))


def _write_seg_folder(root, split: str, count: int, palette=None):
    from PIL import Image

    rng = np.random.default_rng(len(split))
    (root / split / "images").mkdir(parents=True)
    (root / split / "masks").mkdir(parents=True)
    for i in range(count):
        mask = np.zeros((10, 14), dtype=np.uint8)
        mask[2:6, 3 + i % 4 : 9] = 1 + i % 2
        image = (mask * 80 + rng.integers(0, 40, mask.shape)).astype(np.uint8)
        Image.fromarray(np.stack([image] * 3, -1)).save(root / split / "images" / f"{i:03d}.png")
        stored = Image.fromarray(palette[mask]) if palette is not None else Image.fromarray(mask)
        stored.save(root / split / "masks" / f"{i:03d}.png")


def test_seg_folder_pairs_by_stem_and_reads_class_indices(tmp_path):
    _write_seg_folder(tmp_path, "train", 6)
    _write_seg_folder(tmp_path, "val", 3)
    data = build_data(DataConfig(name="seg_folder", root=tmp_path, args={"size": [8, 12]}, val=0))
    assert data.train.images.shape == (6, 3, 8, 12) and data.eval.targets.shape == (3, 8, 12)
    assert data.num_classes == 3 and set(data.train.targets.unique().tolist()) == {0, 1, 2}
    grey = build_data(DataConfig(name="seg_folder", root=tmp_path, args={"channels": 1}, eval_limit=2, val=0))
    assert grey.train.images.shape == (6, 1, 10, 14) and len(grey.eval) == 2
    (tmp_path / "val" / "masks" / "001.png").unlink()
    with pytest.raises(InputError, match="001.png has no mask"):
        build_data(DataConfig(name="seg_folder", root=tmp_path))


def test_seg_folder_maps_colour_masks_through_the_palette(tmp_path):
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255]], dtype=np.uint8)
    _write_seg_folder(tmp_path, "train", 4, palette)
    _write_seg_folder(tmp_path, "val", 2, palette)
    with pytest.raises(InputError, match="palette"):
        build_data(DataConfig(name="seg_folder", root=tmp_path))
    data = build_data(DataConfig(name="seg_folder", root=tmp_path, args={"palette": palette.tolist()}, val=0))
    assert data.num_classes == 3 and set(data.train.targets.unique().tolist()) == {0, 1, 2}


def test_image_folder_reads_torchvision_layout(tmp_path):
    from PIL import Image

    for split, n in (("train", 4), ("val", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                value = 30 if cls == "cat" else 200
                Image.fromarray(np.full((9, 7), value, np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    data = build_data(DataConfig(name="image_folder", root=tmp_path, val=0))
    assert data.class_names == ("cat", "dog") and data.num_classes == 2
    assert data.train.images.shape == (8, 1, 9, 7) and data.eval.targets.tolist() == [0, 0, 1, 1]
    with pytest.raises(InputError, match="not found"):
        build_data(DataConfig(name="image_folder", root=tmp_path, args={"eval": "test"}))


# ── U-Net: pruning keeps the skip concatenations consistent, export keeps H×W dynamic ───────────────────────


@pytest.fixture(scope="module")
def scenes():
    return build_data(DataConfig(name="fashion_scenes", train_limit=32, eval_limit=16))


def test_pruned_unet_keeps_skips_valid_and_exports_with_dynamic_size(scenes, tmp_path):
    from edgekd import prune
    from edgekd.export import ParityReference, create_session, export_onnx
    from edgekd.models import build_model

    task = get_task("segmentation")
    model = build_model(ModelSpec(name="unet", args={"width": 8, "depth": 3}), 11, 1).eval()
    student, result = prune.prune_model(
        model, scenes, task, PruneConfig(reduction=0.75, iterative_steps=2, round_to=None), 0
    )
    assert abs(result.macs_reduction - 0.75) <= 0.01
    widths = {layer.name: layer.after for layer in result.layers}
    assert widths["head"] == 11  # the output head is never pruned
    for up in student.up:  # each decoder conv takes exactly its skip's channels plus the upsampled ones
        assert up.conv[0].in_channels < 8 * 8
    for size in ((64, 64), (37, 50)):  # odd sizes too: upsampling follows the skip's size
        assert student(torch.randn(2, 1, *size)).shape == (2, 11, *size)
    artifact = export_onnx(
        ParityReference(student, scenes, task), ExportConfig(parity_samples=16), tmp_path / "s.onnx", name="s"
    )
    # float rounding may flip a pixel sitting exactly on a class tie; the logits agree to ~1e-6
    assert artifact.parity.passed and artifact.parity.agreement >= 0.999
    assert set(artifact.metrics) == {"miou", "dice", "pixel_accuracy"}
    session = create_session(tmp_path / "s.onnx")
    assert session.get_inputs()[0].shape == ["batch", 1, "height", "width"]
    x = torch.randn(3, 1, 40, 72)
    out = session.run(None, {"input": x.numpy()})[0]
    assert out.shape == (3, 11, 40, 72)
    with torch.inference_mode():
        assert np.abs(out - student(x).numpy()).max() < 1e-3


def test_pruning_warns_when_a_head_is_left_reading_fewer_channels_than_it_emits(scenes, caplog):
    from edgekd import prune
    from edgekd.models import build_model

    task = get_task("segmentation")
    model = build_model(ModelSpec(name="unet", args={"width": 8, "depth": 2}), 11, 1).eval()
    cfg = PruneConfig(target="channels", reduction=0.5, iterative_steps=1, round_to=None)
    with caplog.at_level("WARNING", logger="edgekd"):
        student, _ = prune.prune_model(model, scenes, task, cfg, 0)
    assert student.head.in_channels == 4  # 8 → 4 channels feeding 11 class logits
    assert "head 'head' now reads 4 channels for 11 outputs" in caplog.text
    caplog.clear()
    keep = cfg.model_copy(update={"ignored_layers": ["up.1.conv.3"]})  # the conv feeding the head
    with caplog.at_level("WARNING", logger="edgekd"):
        student, _ = prune.prune_model(model, scenes, task, keep, 0)
    assert student.head.in_channels == 8 and "now reads" not in caplog.text


def test_torchvision_segmentation_model_dict_output_prunes_and_exports(scenes, tmp_path):
    from edgekd import prune
    from edgekd.export import ParityReference, export_onnx
    from edgekd.models import build_model

    task = get_task("segmentation")
    spec = ModelSpec(name="torchvision:lraspp_mobilenet_v3_large")
    model = build_model(spec, scenes.num_classes, scenes.in_channels).eval()
    assert isinstance(model(scenes.example_input(2)), dict)
    student, result = prune.prune_model(
        model, scenes, task, PruneConfig(reduction=0.4, iterative_steps=1, round_to=None), 0
    )
    assert abs(result.macs_reduction - 0.4) <= 0.01
    artifact = export_onnx(
        ParityReference(student, scenes, task), ExportConfig(parity_samples=4), tmp_path / "l.onnx", name="l"
    )
    assert artifact.parity.passed


def test_segmentation_strip_draws_a_png(scenes, tmp_path):
    from edgekd.report.samples import write_segmentation_strip

    def predict(x: torch.Tensor) -> torch.Tensor:
        return torch.randn(len(x), 11, *x.shape[-2:])

    path = write_segmentation_strip(tmp_path / "plots" / "segmentation.png", scenes, predict, predict)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ── the recipes, end to end through the CLI on tiny subsets ────────────────────────────────────────────────

TINY = (  # on top of tests.conftest.SMALL_RUN
    "data.train_limit=64",
    "data.eval_limit=32",
    "data.batch_size=32",
    "prune.iterative_steps=1",
    "export.parity_samples=16",
)


@pytest.mark.parametrize(
    "recipe", ["fashion_scenes_seg.yaml", "fashion_scenes_multi_teacher.yaml", "sclera_unet.yaml"]
)
def test_segmentation_recipe_runs_end_to_end(recipe, tmp_path):
    import json

    from edgekd.report import validate_report
    from tests.conftest import REPO, SMALL_RUN, cli, sets

    out = tmp_path / "run"
    overrides = (*SMALL_RUN, *sets(*TINY))
    proc = cli("compress", str(REPO / "recipes" / recipe), "--out", str(out), *overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    validate_report(report)
    assert report["task"] == "segmentation"
    for model in ("teacher", "student"):
        assert set(report["models"][model]["metrics"]) == {"miou", "dice", "pixel_accuracy"}
    assert report["compression"]["macs_reduction"] >= 0.74
    student = next(a for a in report["artifacts"] if a["path"] == "student.onnx")
    assert student["parity"]["passed"] and 0.0 <= student["metrics"]["miou"] <= 1.0
    assert (out / "plots" / "segmentation.png").is_file()
    assert "plots/segmentation.png" in (out / "report.md").read_text()
    assert cli("report", str(out)).returncode == 0  # re-rendering keeps the strip the run drew
    assert "plots/segmentation.png" in (out / "report.md").read_text()
    recipe_losses = {spec["name"] for spec in report["recipe"]["distill"]["losses"]}
    assert set(report["distillation"]["history"][0]["loss_terms"]) == recipe_losses
