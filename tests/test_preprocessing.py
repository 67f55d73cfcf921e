"""Declared preprocessing (``data.preprocessing``): presets, values, the automatic choice from the teacher and
the data, and a teacher trained on ImageNet-normalised inputs that keeps its accuracy only when edgekd feeds
it the same normalisation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from edgekd.data import build_data, resolved_config
from edgekd.data.preprocessing import IMAGENET, measure
from edgekd.engine.evaluate import evaluate_model
from edgekd.errors import InputError
from edgekd.export.onnx_export import build_metadata
from edgekd.recipe import recipe_from_dict
from edgekd.recipe.schema import DataConfig
from edgekd.tasks import get_task
from tests.conftest import cli, one_line_error

TASK = get_task("classification")


def write_imagenet_pairs(root, per_class: int = 10, channels: int = 3) -> None:
    """Class 0 sits 0.1 below ImageNet's per-channel mean, class 1 0.1 above it (plus noise).

    Normalised with ImageNet's statistics, the sign of the mean input tells the class; with no normalisation
    every input is positive, so a model that reads that sign says "class 1" for everything.
    """
    rng = np.random.default_rng(1)
    mean = np.array(IMAGENET[0][:channels])
    for split in ("train", "val"):
        for label, cls in enumerate(("0_below", "1_above")):  # sorted: class 0, class 1
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                level = (mean + (0.1 if label else -0.1)) * 255
                pixels = level + rng.normal(0, 8, (16, 16, channels))
                array = pixels.clip(0, 255).astype(np.uint8)
                Image.fromarray(array[..., 0] if channels == 1 else array).save(
                    root / split / cls / f"{i}.png"
                )


def sign_teacher() -> nn.Module:
    """A classifier fit to ImageNet-normalised inputs: logit(1) - logit(0) is twice the mean normalised pixel."""
    conv = nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1).expand(2, 3, 1, 1) / 3)
        conv.bias.zero_()
    return nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet_pairs")
    write_imagenet_pairs(root)
    return root


def data_of(root, preprocessing=None, teacher: str | None = None, **extra):
    cfg = DataConfig(name="image_folder", root=root, val=0, preprocessing=preprocessing, **extra)
    return build_data(cfg, teacher=teacher)


def test_a_teacher_keeps_its_accuracy_only_with_its_own_normalisation(pairs):
    teacher = sign_teacher()
    accuracy = {}
    for name, (declared, teacher_name) in {
        "imagenet": ("imagenet", None),
        "torchvision default": (None, "torchvision:mobilenet_v3_small"),
        "none": ("none", None),
        "wrong values": ({"mean": [0.0, 0.0, 0.0], "std": [0.5, 0.5, 0.5]}, None),
    }.items():
        data = data_of(pairs, declared, teacher_name)
        accuracy[name] = evaluate_model(teacher, data.eval_loader(8), TASK)["accuracy"]
    assert accuracy["imagenet"] == accuracy["torchvision default"] == 1.0
    assert accuracy["none"] == accuracy["wrong values"] == 0.5  # every image lands in one class


def test_the_automatic_choice_follows_the_teacher_then_the_dataset_then_measures(pairs, tmp_path):
    tv = data_of(pairs, teacher="torchvision:resnet18").preprocessing
    assert (tv.source, tv.preset, (tv.mean, tv.std)) == ("teacher", "imagenet", IMAGENET)
    assert "torchvision:resnet18" in tv.detail
    own = data_of(pairs, teacher="resnet20").preprocessing
    assert own.source == "measured" and own.detail == "measured on 20 of 20 training images"
    write_imagenet_pairs(tmp_path, per_class=3, channels=1)
    grey = data_of(tmp_path, teacher="torchvision:resnet18").preprocessing  # 3 values cannot feed 1 channel
    assert grey.source == "measured" and len(grey.mean) == 1
    shipped = build_data(DataConfig(train_limit=64, eval_limit=32, val=0), teacher="resnet20").preprocessing
    assert shipped.source == "dataset" and "fashion_mnist" in shipped.detail and len(shipped.mean) == 1


def test_a_timm_teacher_brings_its_pretrained_cfg(pairs):
    pytest.importorskip("timm")
    chosen = data_of(pairs, teacher="timm:vit_base_patch16_224.augreg_in21k").preprocessing
    assert (chosen.source, chosen.mean, chosen.std) == ("teacher", (0.5,) * 3, (0.5,) * 3)
    assert "pretrained_cfg" in chosen.detail


def test_measuring_reads_a_bounded_sample_of_the_training_split(pairs):
    data = data_of(pairs, "none", workers=0, args={"stream": True})
    few = measure(data, limit=6)
    assert few.detail == "measured on 6 of 20 training images" and few.source == "measured"
    full = measure(data)
    assert all(abs(a - b) < 0.1 for a, b in zip(few.mean, full.mean, strict=True))
    assert all(abs(a - b) < 0.02 for a, b in zip(full.mean, IMAGENET[0], strict=True))  # classes are balanced


def test_the_resolved_recipe_and_the_onnx_metadata_say_what_was_used(pairs):
    data = data_of(pairs, "measured")
    cfg = resolved_config(DataConfig(name="image_folder", root=pairs, val=0, preprocessing="measured"), data)
    assert cfg.preprocessing.source == "measured" and cfg.preprocessing.mean == data.preprocessing.mean
    again = build_data(DataConfig.model_validate(cfg.model_dump(mode="json"))).preprocessing
    assert again == data.preprocessing  # a re-export from the recorded recipe feeds the same numbers
    props = build_metadata(data, TASK, dynamic_batch=True)
    origin = json.loads(props["preprocessing_source"])
    assert origin == {"source": "measured", "preset": None, "detail": "measured on 20 of 20 training images"}
    preset = build_metadata(data_of(pairs, "imagenet"), TASK, dynamic_batch=True)
    assert json.loads(preset["preprocessing_source"])["preset"] == "imagenet"


@pytest.mark.parametrize(
    ("value", "expect"),
    [
        ("imagnet", "unknown preset 'imagnet'; did you mean 'imagenet'?"),
        ({"mean": [0.5], "std": [0.5, 0.5]}, "mean has 1 values but std has 2"),
        ({"mean": [0.5], "std": [0.0]}, "std values must be > 0"),
        ({"mean": [0.5], "sdt": [0.5]}, "unknown key 'sdt'; did you mean 'std'?"),
        (3, "give a preset"),
    ],
)
def test_bad_declarations_fail_at_recipe_load_naming_the_key(value, expect):
    raw = {"data": {"preprocessing": value}, "teacher": {"model": {"name": "resnet20"}}}
    with pytest.raises(InputError, match="data.preprocessing") as err:
        recipe_from_dict(raw)
    assert expect in str(err.value) and "\n" not in str(err.value)


def test_a_channel_mismatch_is_one_line_at_data_load(tmp_path):
    write_imagenet_pairs(tmp_path / "grey", per_class=2, channels=1)
    with pytest.raises(
        InputError, match=r"data\.preprocessing \(imagenet\): 3 mean/std values but the images have 1"
    ):
        data_of(tmp_path / "grey", "imagenet")
    recipe = tmp_path / "recipe.yaml"
    raw = {"data": {"name": "image_folder", "root": str(tmp_path / "grey"), "preprocessing": "imagenet"}}
    recipe.write_text(json.dumps({**raw, "teacher": {"model": {"name": "resnet20"}}}))
    error = one_line_error(cli("compress", str(recipe), "--out", str(tmp_path / "run")))
    assert "3 mean/std values but the images have 1 channel" in error
