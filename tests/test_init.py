"""``edgekd init``: the starter recipe it writes for a real folder of images runs end to end through ``compress``.

The folders are generated PNGs (3 classes, 8 training and 4 evaluation images each, 32×32) and the checkpoints
real state dicts of the named architectures: what a user brings, at a size the suite can afford.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from edgekd.recipe import load_recipe
from edgekd.report import validate_report
from tests.conftest import SMALL_RUN, cli, one_line_error, sets

CLASSES = ("bolt", "nut", "washer")
TV_MODEL = "torchvision:mobilenet_v3_small"
TIMM_MODEL = "timm:test_resnet"  # timm's own test-sized ResNet; its pretrained_cfg normalises with 0.5/0.5


def write_image_folder(root: Path, mode: str = "RGB") -> Path:
    """ROOT/{train,val}/<class>/*.png: each class a bright channel over noise, so the classes are learnable."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("val", 4)):
        for label, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 200, (32, 32, 3), dtype=np.uint8)
                pixels[..., label] = 255
                Image.fromarray(pixels).convert(mode).save(root / split / name / f"{i}.png")
    return root


def write_seg_folder(root: Path) -> Path:
    """ROOT/{train,val}/{images,masks}/: grey 24×24 images whose bright square is class 2, a bar class 1."""
    for split, count in (("train", 6), ("val", 3)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(count):
            mask = np.zeros((24, 24), dtype=np.uint8)
            mask[4 + i : 12 + i, 4:12] = 2
            mask[18:20, :] = 1
            Image.fromarray((mask * 100).astype(np.uint8)).save(root / split / "images" / f"{i:03d}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("data") / "parts")


def save_checkpoint(model: str, path: Path) -> Path:
    """A state dict of ``model`` for the folder's 3 classes, as a user's fine-tuning leaves it."""
    family, name = model.split(":")
    torch.manual_seed(0)
    if family == "timm":
        import timm

        net = timm.create_model(name, num_classes=3)
    else:
        import torchvision

        net = torchvision.models.get_model(name, num_classes=3)
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_checkpoint(TV_MODEL, tmp_path_factory.mktemp("ckpt") / "my.pt")


def init_args(data: Path, *extra: str, model: str = TV_MODEL) -> tuple[str, ...]:
    return ("init", "--model", model, "--data", str(data), *extra)


def key_lines(text: str) -> list[str]:
    """Lines that set a value (``key: value`` or a list item), not section headers or comment lines."""
    lines = [line.split(" #")[0].rstrip() for line in text.splitlines()]
    return [
        raw
        for raw, line in zip(text.splitlines(), lines, strict=True)
        if line.strip() and not line.lstrip().startswith("#") and not line.endswith(":")
    ]


@pytest.mark.parametrize(
    ("model", "mean"),
    [(TV_MODEL, [0.485, 0.456, 0.406]), (TIMM_MODEL, [0.5, 0.5, 0.5])],
)
def test_init_recipe_runs_end_to_end_through_compress(model, mean, parts, tmp_path):
    """What init writes runs as is (only made tiny); the model's own normalisation reaches the report."""
    checkpoint = save_checkpoint(model, tmp_path / "my.pt")
    recipe = tmp_path / "recipe.yaml"
    proc = cli(*init_args(parts, "--checkpoint", str(checkpoint), "-o", str(recipe), model=model))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"next: edgekd compress {recipe}" in proc.stdout
    out = tmp_path / "run"
    tiny = sets("data.args.size=32", "export.int8=false", "data.batch_size=8", "prune.iterative_steps=1")
    proc = cli("compress", str(recipe), "--out", str(out), *SMALL_RUN, *tiny)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    validate_report(report)
    assert report["recipe"]["data"]["name"] == "image_folder"
    assert report["recipe"]["teacher"]["model"]["name"] == model
    assert report["input"]["classes"] == list(CLASSES)
    assert report["input"]["preprocessing"]["mean"] == pytest.approx(mean)
    assert 0.4 <= report["compression"]["macs_reduction"] <= 0.6
    assert (out / "report.md").is_file()


def test_written_recipe_loads_and_every_value_has_a_comment(parts, checkpoint, tmp_path, edgekd_main):
    code, text, err = edgekd_main(*init_args(parts, "--checkpoint", str(checkpoint)))
    assert code == 0, err
    recipe_file = tmp_path / "elsewhere" / "recipe.yaml"  # stdout: paths are absolute, so it loads anywhere
    recipe_file.parent.mkdir()
    recipe_file.write_text(text)
    recipe = load_recipe(recipe_file)
    assert recipe.data.name == "image_folder" and recipe.data.root == parts.resolve()
    assert recipe.data.args == {"size": [224, 224], "channels": 3, "eval": "val"}
    assert recipe.data.preprocessing == "imagenet"
    assert recipe.teacher.checkpoint == checkpoint.resolve()
    assert (recipe.prune.target, recipe.prune.reduction, recipe.prune.round_to) == ("macs", 0.5, 8)
    assert [loss.name for loss in recipe.distill.losses] == ["ce", "kd"]
    assert recipe.export.int8 is not None and recipe.profile.targets == ["local"]
    assert "  # found 3 classes, 24 training and 12 evaluation images" in text
    assert "  # classes in index order: bolt, nut, washer\n" in text
    uncommented = [line for line in key_lines(text) if " # " not in line]
    assert uncommented == []
    assert len(key_lines(text)) >= 25


def test_output_file_gets_paths_relative_to_it_and_named_targets(parts, tmp_path, edgekd_main):
    recipe_file = parts.parent / "recipe.yaml"
    url = "ssh://pi@raspberrypi.local:22"
    code, out, err = edgekd_main(
        *init_args(parts, "--target", url, "--size", "96x128", "-o", str(recipe_file), model="resnet20")
    )
    assert code == 0, err
    raw = yaml.safe_load(recipe_file.read_text())
    assert raw["data"]["root"] == "parts" and raw["teacher"]["checkpoint"] is None
    assert raw["data"]["args"]["size"] == [96, 128]
    assert raw["data"]["preprocessing"] == "measured"  # a built-in publishes no normalisation
    assert raw["profile"]["targets"] == ["local", url]
    code, _, err = edgekd_main(*init_args(parts, "-o", str(recipe_file), model="resnet20"))
    assert code == 2 and "file exists; pass --force" in err
    recipe_file.unlink()


def test_grey_images_stay_grey_for_a_built_in_and_become_rgb_for_torchvision(tmp_path, edgekd_main):
    """A torchvision checkpoint fine-tuned through ImageFolder saw grey files converted to RGB; a built-in
    model has no preference, so the images decide (and their size too)."""
    grey = write_image_folder(tmp_path / "grey", mode="L")
    code, text, err = edgekd_main(*init_args(grey, model="mobilenet_v2"))
    assert code == 0, err
    assert yaml.safe_load(text)["data"]["args"] == {"size": [32, 32], "channels": 1, "eval": "val"}
    code, text, err = edgekd_main(*init_args(grey))
    assert code == 0, err
    assert yaml.safe_load(text)["data"]["args"]["channels"] == 3
    assert "grey images are converted" in text


def test_segmentation_folder_is_detected(tmp_path, edgekd_main):
    root = write_seg_folder(tmp_path / "eyes")
    code, text, err = edgekd_main(*init_args(root, model="unet"))
    assert code == 0, err
    raw = yaml.safe_load(text)
    assert raw["task"] == "segmentation" and raw["data"]["name"] == "seg_folder"
    assert [loss["name"] for loss in raw["distill"]["losses"]] == ["ce", "pixel_kd"]
    assert raw["data"]["args"]["size"] == [24, 24] and raw["data"]["args"]["channels"] == 1
    assert "# found 3 classes, 6 training and 3 evaluation images" in text


def test_test_directory_is_the_eval_split_and_val_the_validation_split(parts, tmp_path, edgekd_main):
    root = write_image_folder(tmp_path / "three")
    (root / "val").rename(root / "test")
    write_image_folder(tmp_path / "extra")
    (tmp_path / "extra" / "val").rename(root / "val")
    code, text, err = edgekd_main(*init_args(root, model="resnet20"))
    assert code == 0, err
    data = yaml.safe_load(text)["data"]
    assert data["args"]["eval"] == "test" and data["val"] == "val"


def test_timm_model_brings_its_input_size_and_normalisation(parts, edgekd_main):
    import timm

    cfg = timm.get_pretrained_cfg("mobilenetv3_large_100")
    code, text, err = edgekd_main(*init_args(parts, model="timm:mobilenetv3_large_100"))
    assert code == 0, err
    data = yaml.safe_load(text)["data"]
    assert data["args"]["size"] == list(cfg.input_size[1:])
    assert data["preprocessing"] == {"mean": list(cfg.mean), "std": list(cfg.std)}
    assert "(timm's pretrained_cfg)" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--data", "{tmp}/nowhere"), "--data: {tmp}/nowhere is not a directory"),
        (("--data", "{tmp}"), "edgekd init understands image_folder (ROOT/train/<class>/*.jpg"),
        (("--model", "torchvision:mobilenet_v9_small"), "did you mean 'mobilenet_v3_small'?"),
        (("--model", "resnet21"), "--model: unknown model 'resnet21'"),
        (("--model", "timm:mobilenetv3_large_10"), "timm has no model 'mobilenetv3_large_10'"),
        (("--checkpoint", "{tmp}/missing.pt"), "missing.pt: file not found"),
        (("--checkpoint", "{wrong}"), "does not match the model"),
        (("--task", "segmentation"), "--task segmentation: "),
        (("--model", "torchvision:lraspp_mobilenet_v3_large"), "is a segmentation model"),
        (("--target", "pi5"), "--target pi5: unknown target 'pi5'"),
        (("--size", "big"), "--size big: give SIZE or HEIGHTxWIDTH"),
        (("-o", "{tmp}/no/dir/recipe.yaml"), "does not exist"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, message, parts, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_TARGETS", str(tmp_path / "targets.yaml"))  # no named targets anywhere
    wrong = tmp_path / "wrong.pt"  # a 1000-class head against a 3-class folder
    torch.save({"weight": torch.zeros(1000, 8)}, wrong)
    fill = {"tmp": tmp_path, "wrong": wrong}
    args = tuple(a.format(**fill) for a in args)
    base = {"--model": TV_MODEL, "--data": str(parts)}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    proc = cli("init", *(word for pair in base.items() for word in pair))
    line = one_line_error(proc)
    assert message.format(**fill) in line, line
