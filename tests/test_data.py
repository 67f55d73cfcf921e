"""Fashion-MNIST from its real IDX files; search order, limits, augmentation and clear errors. Every registered
dataset's typed options (``data.args``): defaults, documentation, typos answered with "did you mean"."""

from __future__ import annotations

import ast
import gzip
import sys

import pytest
import torch
from pydantic import ValidationError

from edgekd.data import DATASETS, DatasetParams, build_data, fashion_mnist, parse_dataset_params
from edgekd.data.base import augment_batch
from edgekd.errors import InputError
from edgekd.recipe.schema import DataConfig
from tests.conftest import REPO


def test_reads_real_files_with_limits(small_data):
    # data.val (10% by default) is carved from the 1024 training samples the limit reads
    assert len(small_data.train) == 922 and len(small_data.val) == 102 and len(small_data.eval) == 512
    assert small_data.input_size == (28, 28) and small_data.in_channels == 1 and small_data.num_classes == 10
    assert small_data.train.images.dtype == torch.uint8
    assert set(small_data.eval.targets.unique().tolist()) <= set(range(10))


def test_loader_normalises_and_is_repeatable(small_data):
    loader = small_data.train_loader(256, augment=True, seed=3)
    loader.set_epoch(1)
    first = [x for x, _ in loader]
    loader.set_epoch(1)
    again = [x for x, _ in loader]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    full = torch.cat([x for x, _ in small_data.train_loader(1024, augment=False, seed=0, shuffle=False)])
    assert abs(float(full.mean())) < 0.2 and 0.8 < float(full.std()) < 1.2


def test_augmentation_crops_and_flips_without_changing_shape():
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).view(2, 1, 6, 6)
    out = augment_batch(images, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == images.shape and out.dtype == images.dtype
    same = augment_batch(images, torch.Generator().manual_seed(0), pad=0)
    assert all(torch.equal(s, i) or torch.equal(s, i.flip(-1)) for s, i in zip(same, images, strict=True))


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "none")
    monkeypatch.delenv("EDGEKD_DATA", raising=False)
    with pytest.raises(InputError, match="apt-get install dataset-fashion-mnist"):
        build_data(DataConfig(root=tmp_path))


def test_truncated_idx_file_is_rejected(tmp_path):
    src = fashion_mnist.SYSTEM_DIR / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(src.read_bytes())
    bad = tmp_path / "labels.gz"
    bad.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(InputError, match="truncated"):
        fashion_mnist.read_idx(bad)


def test_non_idx_file_is_rejected(tmp_path):
    bad = tmp_path / "x.gz"
    bad.write_bytes(gzip.compress(b"hello world"))
    with pytest.raises(InputError, match="not an unsigned-byte IDX"):
        fashion_mnist.read_idx(bad)


def test_torchvision_layout_is_found(tmp_path, monkeypatch):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for fname, _ in fashion_mnist.FILES.values():
        (raw / fname).symlink_to(fashion_mnist.SYSTEM_DIR / fname)
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "none")
    bundle = build_data(DataConfig(root=tmp_path, train_limit=10, eval_limit=10))
    assert bundle.extra["source"] == str(raw)


# ── typed dataset options (data.args) ───────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_declares_documented_options_whose_defaults_validate(name):
    """Registry sweep: a new dataset gets the same contract checks without a test of its own."""
    builder = DATASETS.get(name)
    assert issubclass(builder.Params, DatasetParams) and builder.name == name
    assert builder.Params.model_config.get("extra") == "forbid" and builder.Params.model_config.get("frozen")
    defaults = builder.Params()  # every option has a default: a recipe without data.args builds
    assert parse_dataset_params(DataConfig(name=name, augment=False), "recipe.yaml: data.args") == defaults
    module_doc = sys.modules[builder.build.__module__].__doc__ or ""
    assert builder.build.__doc__ and builder.Params.__doc__
    for field, info in builder.Params.model_fields.items():
        assert info.description, f"{name}: option '{field}' has no description"
        assert f"``{field}``" in module_doc, f"{name}: the module docstring does not document '{field}'"
    for field in list(builder.Params.model_fields)[:1]:  # frozen: parsed options cannot drift after the check
        with pytest.raises(ValidationError, match="frozen"):
            setattr(defaults, field, getattr(defaults, field))


@pytest.mark.parametrize("name", [n for n in DATASETS.names() if DATASETS.get(n).Params.model_fields])
def test_every_dataset_answers_a_typo_with_the_closest_option(name):
    option = max(DATASETS.get(name).Params.model_fields, key=lambda f: (len(f), f))
    cfg = DataConfig(name=name, args={option[:-1]: 1})
    with pytest.raises(InputError, match=f"did you mean '{option}'") as raised:
        parse_dataset_params(cfg, "recipe.yaml: data.args")
    assert str(raised.value).startswith(f"recipe.yaml: data.args.{option[:-1]}: {name} has no option")
    with pytest.raises(InputError, match=f"^data.args.{option[:-1]}: .*did you mean '{option}'"):
        build_data(cfg)  # the Python API checks too, before looking for any file


@pytest.mark.parametrize(
    ("name", "args", "suggestion"),
    [
        ("fashion_scenes", {"canvass": 64}, "canvas"),
        ("synth_eyes", {"trian_size": 100}, "train_size"),
        ("image_folder", {"chanels": 3}, "channels"),
        ("seg_folder", {"palete": [[0, 0, 0]]}, "palette"),
        ("seg_folder", {"num_class": 3}, "num_classes"),
    ],
)
def test_typos_in_data_args_are_answered_with_did_you_mean(name, args, suggestion):
    with pytest.raises(InputError, match=f"; did you mean '{suggestion}'\\?"):
        parse_dataset_params(DataConfig(name=name, args=args), "recipe.yaml: data.args")


def test_fashion_mnist_takes_no_options():
    with pytest.raises(
        InputError, match=r"^data\.args\.size: fashion_mnist has no option 'size' .*takes no data.args"
    ):
        build_data(DataConfig(args={"size": 28}))


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        (
            "fashion_scenes",
            {"garments": [3, 1]},
            r"data\.args\.garments: expected \[min, max\] with min <= max",
        ),
        ("fashion_scenes", {"canvas": 20}, r"data\.args\.canvas: .*greater than or equal to 28"),
        ("fashion_scenes", {"threshold": 255}, r"data\.args\.threshold"),
        ("synth_eyes", {"target": "iris"}, r"data\.args\.target: 'iris' is not one of gaze, sclera"),
        ("synth_eyes", {"size": [8, 60]}, r"data\.args\.size: each of \[height, width\] must be >= 16"),
        ("synth_eyes", {"channels": 2}, r"data\.args\.channels"),
        ("synth_eyes", {"seed": True}, r"data\.args\.seed"),
        ("image_folder", {"size": [0, 8]}, r"data\.args\.size\.0"),
        ("seg_folder", {"palette": [[0, 0, 256]]}, r"data\.args\.palette\.0\.2"),
        (
            "seg_folder",
            {"num_classes": 3, "class_names": ["a", "b"]},
            r"data\.args\.class_names: 2 names for 3",
        ),
    ],
)
def test_bad_option_values_name_the_key_path(name, args, message):
    with pytest.raises(InputError, match="^recipe.yaml: " + message):
        parse_dataset_params(DataConfig(name=name, augment=False, args=args), "recipe.yaml: data.args")


def test_options_are_typed_and_conflicts_with_the_data_section_are_refused():
    eyes = parse_dataset_params(
        DataConfig(name="synth_eyes", augment=False, args={"size": 48, "target": "sclera"}), "data.args"
    )
    assert eyes.size == (48, 48) and eyes.target == "sclera"
    scenes = parse_dataset_params(DataConfig(name="fashion_scenes", args={"garments": 3}), "data.args")
    assert scenes.garments == (3, 3) and scenes.canvas == 64
    seg = parse_dataset_params(DataConfig(name="seg_folder", args={"class_names": ["bg", 1]}), "data.args")
    assert seg.class_names == ("bg", "1") and seg.eval == "val"
    with pytest.raises(InputError, match=r"^recipe\.yaml: data\.augment: a horizontal flip"):
        parse_dataset_params(DataConfig(name="synth_eyes"), "recipe.yaml: data.args")
    with pytest.raises(InputError, match="unknown dataset 'synth_eye'; did you mean 'synth_eyes'"):
        parse_dataset_params(DataConfig(name="synth_eye"), "recipe.yaml: data.args")


def test_data_does_not_import_tasks():
    """Layering: a dataset says what its targets mean (``target_kind``); tasks read it from data, not back."""
    for path in sorted((REPO / "edgekd" / "data").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n.startswith("edgekd.tasks")], f"{path.name} imports {names}"
    from edgekd.data.gaze import GAZE_PITCH_YAW, gaze_vector
    from edgekd.tasks import regression

    assert regression.GAZE_PITCH_YAW is GAZE_PITCH_YAW and regression.gaze_vector is gaze_vector
