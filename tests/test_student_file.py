"""student.pt: pruned students reload in a fresh process from plain data, and hostile files are refused."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgekd.data import DataBundle, Preprocessing, TensorSplit, build_data
from edgekd.errors import InputError
from edgekd.io import TMP_MARK
from edgekd.models import build_model
from edgekd.models.student_file import load_student, read_student_meta, save_student
from edgekd.prune import prune_model
from edgekd.recipe.schema import DataConfig, ModelSpec, PruneConfig
from edgekd.results import to_dict
from edgekd.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
TASK = get_task("classification")
CASES = {  # spec name -> (in_channels, image size)
    "resnet20": (1, 28),
    "torchvision:resnet18": (3, 64),
    "torchvision:mobilenet_v2": (3, 64),
}


@pytest.fixture(scope="module")
def fmnist() -> DataBundle:
    return build_data(DataConfig(train_limit=64, eval_limit=8))


def bundle(data: DataBundle, channels: int, size: int) -> DataBundle:
    """Real Fashion-MNIST images at the size and channel count a model expects."""
    if (channels, size) == (1, 28):
        return data

    def grow(split: TensorSplit) -> TensorSplit:
        images = F.interpolate(split.images.float(), size=(size, size), mode="bilinear", align_corners=False)
        return TensorSplit(
            images.round().clamp(0, 255).to(torch.uint8).repeat(1, channels, 1, 1), split.targets
        )

    stats = data.preprocessing
    prep = Preprocessing(mean=stats.mean * channels, std=stats.std * channels)
    return DataBundle(data.name, grow(data.train), grow(data.eval), data.num_classes, prep)


def pruned_student(name: str, data: DataBundle) -> tuple[nn.Module, ModelSpec, DataBundle]:
    channels, size = CASES[name]
    data = bundle(data, channels, size)
    spec = ModelSpec(name=name)
    torch.manual_seed(0)
    teacher = build_model(spec, num_classes=10, in_channels=channels)
    student, _ = prune_model(
        teacher, data, TASK, PruneConfig(target="channels", reduction=0.4, iterative_steps=1), seed=0
    )
    student.train()  # move BatchNorm running statistics away from their init so buffers must round-trip too
    with torch.no_grad():
        student(next(iter(data.train_loader(16, augment=False, seed=0)))[0])
    return student.eval(), spec, data


def fresh_process(code: str) -> str:
    """Run ``code`` in a new interpreter (nothing of this process's modules or classes) and return stdout."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize("name", list(CASES))
def test_pruned_student_reloads_exactly_in_a_fresh_process(
    name: str, fmnist: DataBundle, tmp_path: Path
) -> None:
    student, spec, data = pruned_student(name, fmnist)
    channels = CASES[name][0]
    fresh = build_model(spec, num_classes=10, in_channels=channels)
    assert any(v.shape != fresh.state_dict()[k].shape for k, v in student.state_dict().items()), (
        "nothing pruned"
    )

    x = data.example_input(4)
    with torch.no_grad():
        expected = student(x)
    torch.save({"x": x, "expected": expected}, tmp_path / "probe.pt")
    save_student(tmp_path / "student.pt", student, spec, 10, channels, meta={"note": "test", "pair": (1, 2)})
    assert not list(tmp_path.glob(f"*{TMP_MARK}")), "a temporary file was left behind"

    out = fresh_process(
        f"""
        import torch
        from edgekd.models.student_file import load_student
        model = load_student({str(tmp_path / "student.pt")!r})
        probe = torch.load({str(tmp_path / "probe.pt")!r}, weights_only=True)
        with torch.no_grad():
            got = model(probe["x"])
        print("training", model.training)
        print("widths", [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)])
        print("equal", torch.equal(got, probe["expected"]), float((got - probe["expected"]).abs().max()))
        """
    )
    assert "training False" in out
    assert f"widths {[m.out_channels for m in student.modules() if isinstance(m, nn.Conv2d)]}" in out
    assert "equal True 0.0" in out, out


def test_file_is_plain_data(fmnist: DataBundle, tmp_path: Path) -> None:
    student, spec, _ = pruned_student("resnet20", fmnist)
    save_student(tmp_path / "s.pt", student, spec, 10, 1, meta={"prune": {"macs_after": 1}})
    raw = torch.load(tmp_path / "s.pt", weights_only=True)  # the contract: no unpickling of code needed
    assert raw["format"] == "edgekd-student" and raw["version"] == 1
    assert raw["modules"]["layer1.0.conv1"]["attrs"]["out_channels"] == student.layer1[0].conv1.out_channels
    assert raw["shapes"]["fc.weight"] == list(student.fc.weight.shape)
    assert read_student_meta(tmp_path / "s.pt") == {"prune": {"macs_after": 1}}


def test_meta_must_be_plain_data(tmp_path: Path) -> None:
    spec = ModelSpec(name="resnet20")
    model = build_model(spec, 10, 1)
    with pytest.raises(ValueError, match=r"meta.run.path is a PosixPath; meta holds only"):
        save_student(tmp_path / "s.pt", model, spec, 10, 1, meta={"run": {"path": tmp_path}})
    assert not (tmp_path / "s.pt").exists()
    # Scalar subclasses are stored as built-ins, so the file still loads with weights_only=True.
    meta = {"acc": np.float64(0.5), "n": np.int64(3), "v": torch.__version__, "t": torch.ones(2), "p": (1, 2)}
    save_student(tmp_path / "s.pt", model, spec, 10, 1, meta=meta)
    stored = read_student_meta(tmp_path / "s.pt")
    assert stored["acc"] == 0.5 and type(stored["acc"]) is float and type(stored["n"]) is int
    assert type(stored["v"]) is str and torch.equal(stored["t"], torch.ones(2)) and stored["p"] == (1, 2)


def test_prune_record_fits_in_meta(fmnist: DataBundle, tmp_path: Path) -> None:
    spec = ModelSpec(name="resnet20")
    student, result = prune_model(
        build_model(spec, 10, 1),
        fmnist,
        TASK,
        PruneConfig(target="channels", reduction=0.5, iterative_steps=1),
        0,
    )
    save_student(tmp_path / "s.pt", student, spec, 10, 1, meta={"prune": to_dict(result)})
    assert read_student_meta(tmp_path / "s.pt")["prune"]["macs_after"] == result.macs_after
    reloaded = load_student(tmp_path / "s.pt")
    x = fmnist.example_input(2)
    with torch.no_grad():
        assert torch.equal(reloaded(x), student.eval()(x))


# -- refusals ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(fmnist: DataBundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    student, spec, _ = pruned_student("resnet20", fmnist)
    path = tmp_path_factory.mktemp("student") / "student.pt"
    save_student(path, student, spec, 10, 1)
    return path


def test_truncated_file_is_refused(saved: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.pt"
    cut.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    with pytest.raises(InputError, match="corrupt or truncated student file"):
        load_student(cut)


def test_missing_and_foreign_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="student file not found"):
        load_student(tmp_path / "nope.pt")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(InputError, match="not an edgekd student file"):
        load_student(tmp_path / "plain.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(InputError, match="corrupt"):
        load_student(tmp_path / "text.pt")


def test_newer_format_version_is_refused(saved: Path, tmp_path: Path) -> None:
    data = torch.load(saved, weights_only=True)
    data["version"] = 99
    torch.save(data, tmp_path / "future.pt")
    with pytest.raises(InputError, match="format version 99 is newer"):
        load_student(tmp_path / "future.pt")


def test_architecture_mismatch_names_the_difference(saved: Path, tmp_path: Path) -> None:
    data = torch.load(saved, weights_only=True)
    deeper = dict(data, spec=ModelSpec(name="resnet32").model_dump(mode="json"))
    torch.save(deeper, tmp_path / "deeper.pt")
    with pytest.raises(
        InputError,
        match=r"no longer builds the saved architecture: it has modules the file lacks: 'layer1.3'",
    ):
        load_student(tmp_path / "deeper.pt")

    state = dict(data["state_dict"])
    state["fc.weight"] = torch.zeros(10, 3)
    torch.save(dict(data, state_dict=state), tmp_path / "shape.pt")
    with pytest.raises(InputError, match=r"shape mismatch fc.weight \(10, 3\)"):
        load_student(tmp_path / "shape.pt")


def test_factory_spec_needs_trust(fmnist: DataBundle, tmp_path: Path) -> None:
    spec = ModelSpec(name="edgekd.models.resnet_cifar:resnet_cifar", args={"depth": 8})
    model = build_model(spec, 10, 1).eval()
    save_student(tmp_path / "f.pt", model, spec, 10, 1)
    with pytest.raises(InputError, match="imports and runs that code; load it with trust=True"):
        load_student(tmp_path / "f.pt")
    x = fmnist.example_input()
    with torch.no_grad():
        assert torch.equal(load_student(tmp_path / "f.pt", trust=True)(x), model(x))


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: the file appears iff code ran during loading."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def test_file_that_runs_code_on_load_is_refused(saved: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    data = torch.load(saved, weights_only=True)
    data["meta"] = {"payload": _Payload(marker)}
    torch.save(data, tmp_path / "evil.pt")

    with pytest.raises(InputError, match="refused to load: the file contains pickled objects"):
        load_student(tmp_path / "evil.pt")
    with pytest.raises(InputError, match="refused to load"):
        read_student_meta(tmp_path / "evil.pt")
    assert not marker.exists()

    # The payload is live: a plain unpickling runs it. (This is what load_student protects against.)
    torch.load(tmp_path / "evil.pt", weights_only=False)["meta"]["payload"].close()
    assert marker.exists()
