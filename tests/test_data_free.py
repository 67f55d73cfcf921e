"""Data-free distillation (issue 16): every method synthesises sane batches and improves its own objective; a
recipe runs end to end through the CLI without reading a training image; resume reproduces the uninterrupted
run; methods the task cannot use are refused at load with one line.

All on the shipped Fashion-MNIST teacher with fixed seeds and tiny budgets (batches of 16, a few steps).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch

from edgekd.context import RunContext
from edgekd.distill import SYNTHESIZERS, build_synthetic_batches, train_student
from edgekd.distill.data_free.base import BNStatistics, SynthContext, pixel_bounds
from edgekd.errors import InputError
from edgekd.recipe.data_free import DataFreeConfig
from edgekd.recipe.schema import DataConfig, DistillConfig, Recipe
from edgekd.run import recipe_from_dict
from edgekd.rundir import RunDir
from edgekd.tasks import get_task
from tests.conftest import REPO, SMALL_RUN, TEACHER, cli, one_line_error, sets

DATA_FREE = REPO / "recipes" / "data_free.yaml"
# Each method's own options for a tiny budget (small generators, few input-optimisation steps).
TINY = {
    "deepinversion": {"iterations": 8, "every": 2},
    "dafl": {"width": 16},
    "dfad": {"width": 16},
    "two_generators": {"width": 16},
}


@pytest.fixture(scope="module")
def teacher(small_data):
    from edgekd.teacher import build_teacher

    recipe = Recipe(teacher={"model": {"name": "resnet20"}, "checkpoint": str(TEACHER)})
    return build_teacher(recipe, small_data).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def student(teacher):
    """A perturbed copy of the teacher: it disagrees with it, as a pruned student does."""
    model = copy.deepcopy(teacher).requires_grad_(True)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.2 * param.std() * torch.randn(param.shape, generator=gen))
    return model


def synth_context(name: str, teacher, student, data, **budget) -> SynthContext:
    cfg = DataFreeConfig(method=name, batch_size=16, latent_dim=16, **TINY[name], **budget)
    return SynthContext(
        teacher=teacher,
        student=student,
        task=get_task("classification", data),
        shape=(1, 28, 28),
        num_classes=data.num_classes,
        preprocessing=data.preprocessing,
        budget=cfg,
        seed=0,
    )


def build(name: str, teacher, student, data):
    ctx = synth_context(name, teacher, student, data)
    method = SYNTHESIZERS.get(name)
    torch.manual_seed(0)
    return method(method.Params(**ctx.budget.params), ctx)


@pytest.mark.parametrize("name", SYNTHESIZERS.names())
def test_every_method_makes_finite_images_of_the_input_shape_in_the_pixel_range(
    name, teacher, student, small_data
):
    synth = build(name, teacher, student, small_data)
    images = synth.synthesize(16, step=0)
    assert images.shape == (16, 1, 28, 28) and not images.requires_grad
    assert torch.isfinite(images).all()
    low, high = pixel_bounds(small_data.preprocessing, 1)
    assert (images >= low - 1e-5).all() and (images <= high + 1e-5).all()
    assert images.std() > 1e-3  # not a constant image
    synth.close()


def _objectives(name: str, synth) -> list:
    """The losses ``name``'s synthesis minimises, as functions of the generator output on fixed noise."""
    if name == "two_generators":
        return [(synth.hard, synth.hard_loss), (synth.easy, synth.easy_loss)]
    return [(synth.generator, synth.loss)]


@pytest.mark.parametrize("name", ["dafl", "dfad", "two_generators"])
def test_generator_methods_lower_their_own_objective(name, teacher, student, small_data):
    synth = build(name, teacher, student, small_data)
    z = torch.randn(16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = [float(loss(gen(z))) for gen, loss in _objectives(name, synth)]
    for step in range(8):
        synth.synthesize(16, step)
    with torch.no_grad():
        after = [float(loss(gen(z))) for gen, loss in _objectives(name, synth)]
    assert all(a < b for a, b in zip(after, before, strict=True)), (before, after)
    synth.close()


def test_deepinversion_brings_the_teachers_batchnorm_statistics_closer(teacher, student, small_data):
    synth = build("deepinversion", teacher, student, small_data)
    start = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(0 * 1_000_003 + 17))
    images = synth.synthesize(16, step=0)
    assert synth.synthesize(16, step=1) is None  # every: 2 -> the student trains on the bank in between
    stats = BNStatistics(teacher)
    distances = []
    for batch in (start.clamp(synth.low, synth.high), images):
        with torch.no_grad(), stats.recording():
            teacher(batch)
        distances.append(float(stats.loss()))
    stats.remove()
    synth.close()
    assert distances[1] < 0.85 * distances[0], distances


def test_synthetic_batches_mix_fresh_and_replayed_samples_labelled_by_the_teacher(
    teacher, student, small_data
):
    spec = {"method": "dfad", "memory_bank": 40, "replay": 0.5, "width": 16, "freeze_student_bn": True}
    ctx = _run_context(small_data, teacher, spec)
    batches = build_synthetic_batches(ctx, student)
    out = [b for _, b in zip(range(3), batches.indexed(), strict=False)]
    assert [len(b.images) for b in out] == [16, 16, 16]
    assert batches.samples == 16 + 8 + 8 and batches.filled == 32  # fresh samples only, then half replayed
    assert all(b.targets.dtype == torch.long and (b.indices == -1).all() for b in out)
    with torch.no_grad():
        assert torch.equal(out[-1].targets, teacher(out[-1].images).argmax(1))
    assert not any(m.training for m in student.modules() if isinstance(m, torch.nn.BatchNorm2d))
    batches.close()


def _run_context(data, teacher, data_free: dict, epochs: int = 1) -> RunContext:
    cfg = DistillConfig(
        epochs=epochs,
        schedule="constant",
        losses=[{"name": "kd", "weight": 1.0}],
        data_free={"batch_size": 16, "latent_dim": 16, "steps_per_epoch": 3, **data_free},
    )
    recipe = Recipe(teacher={"model": {"name": "resnet20"}}, distill=cfg, data=DataConfig(val=0))
    import tempfile

    run = RunDir(Path(tempfile.mkdtemp(prefix="edgekd-df-")))
    return RunContext(
        recipe=recipe, run=run, data=data, task=get_task("classification", data), teachers=(teacher,)
    )


class _NoTrainingSplit:
    """Wraps a DataBundle: any read of the training split fails the test."""

    def __init__(self, data):
        self._data = data

    def __getattr__(self, name):
        if name in ("train", "train_loader"):
            raise AssertionError(f"data-free distillation read the training split ({name})")
        return getattr(self._data, name)


def test_resume_from_an_epoch_checkpoint_reproduces_the_uninterrupted_run(
    teacher, student, small_data, tmp_path
):
    """Epoch 1 of a 2-epoch run (constant LR) checkpointed, then resumed: same weights, bank and counts."""
    import dataclasses

    data = dataclasses.replace(small_data, eval=small_data.eval.head(128), val=None)
    spec = {"method": "two_generators", "memory_bank": 64, "width": 16}
    guarded = _NoTrainingSplit(data)

    def distil(epochs: int, checkpoint: Path, resume: bool):
        ctx = dataclasses.replace(_run_context(data, teacher, spec, epochs), resume_training=resume)
        ctx = dataclasses.replace(ctx, data=guarded)
        model = copy.deepcopy(student)
        batches = build_synthetic_batches(ctx, model)
        result = train_student(ctx, model, checkpoint, batches)
        batches.close()
        return model, batches, result

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight, straight_batches, _ = distil(2, tmp_path / "a" / "distill-last.pt", resume=False)
    distil(1, tmp_path / "b" / "distill-last.pt", resume=False)  # the "killed" run: epoch 1 checkpointed
    resumed, resumed_batches, result = distil(2, tmp_path / "b" / "distill-last.pt", resume=True)
    assert result.epochs == 2 and len(result.history) == 2
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert resumed_batches.samples == straight_batches.samples == 2 * 3 * 16 - 8 * 5
    assert resumed_batches.filled == straight_batches.filled == 56
    assert torch.equal(resumed_batches.bank, straight_batches.bank)


# -- the recipe, end to end through the CLI --------------------------------------------------------------------

# Runs `python -m edgekd` with the training split booby-trapped: building a loader over it, or reading its
# images, ends the process. Everything else is the real entry point.
_GUARDED = """
import sys
import edgekd.data.base as base
def _refuse(*args, **kwargs):
    raise SystemExit("training split read: " + repr(args[:1]))
base.DataBundle.train_loader = _refuse
_init = base.TensorLoader.__init__
def _checked(self, split, *args, **kwargs):
    if len(split) == 1024:  # data.train_limit below: only the training split has this size
        _refuse(split)
    _init(self, split, *args, **kwargs)
base.TensorLoader.__init__ = _checked
from edgekd.cli import main
sys.argv[0] = "edgekd"
main()
"""
TINY_RUN = (
    *SMALL_RUN,
    *sets(
        "data.train_limit=1024",
        "distill.epochs=2",
        "distill.data_free.steps_per_epoch=3",
        "distill.data_free.batch_size=16",
        "distill.data_free.memory_bank=64",
        "distill.data_free.width=16",
        "prune.iterative_steps=2",
    ),
)


def test_recipe_runs_end_to_end_without_reading_a_training_image(tmp_path):
    out = tmp_path / "run"
    proc = cli(
        "compress", str(DATA_FREE), "--out", str(out), *TINY_RUN, launcher=(sys.executable, "-c", _GUARDED)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    free = report["stages"]["distill"]["data_free"]
    assert free["method"] == "two_generators" and free["seconds"] > 0
    assert free["synthetic_samples"] == 16 + 5 * 8  # 2 epochs x 3 steps: 16 fresh, then half of 16 replayed
    assert (out / "plots" / "synthetic.png").stat().st_size > 1000
    markdown = (out / "report.md").read_text()
    assert "No training images used" in markdown and "plots/synthetic.png" in markdown
    student = {a["name"]: a for a in report["artifacts"]}["student.onnx"]
    assert student["metrics"]["accuracy"] > 0.1  # evaluated for real, on the eval split


# -- refused at load ---------------------------------------------------------------------------------------------


def _recipe(task: str = "classification", **distill) -> dict:
    return {
        "task": task,
        "teacher": {"model": {"name": "unet" if task == "segmentation" else "resnet20"}},
        "data": {"name": "fashion_scenes" if task == "segmentation" else "fashion_mnist", "val": 0},
        "distill": {"losses": [{"name": "kd"}], **distill},
    }


@pytest.mark.parametrize(
    ("recipe", "expect"),
    [
        (_recipe("segmentation", data_free={"method": "dafl"}), "'dafl' as configured has class-conditional"),
        (_recipe("segmentation", data_free={"method": "deepinversion"}), "deepinversion with ce: 0"),
        (_recipe(data_free={"method": "two_generator"}), "did you mean 'two_generators'"),
        (_recipe(data_free={"method": "dfad", "widht": 8}), "distill.data_free.widht: Extra inputs"),
        ({**_recipe(data_free=True), "prune": {"importance": "taylor"}}, "prune.importance: 'taylor'"),
        ({**_recipe(data_free=True), "export": {"int8": True}}, "export.int8: INT8 calibration"),
        ({**_recipe(data_free=True), "data": {"val": 0.1}}, "data.val: 0.1 would be carved"),
    ],
    ids=["dafl-seg", "di-seg", "typo", "bad-option", "taylor", "int8", "val"],
)
def test_incompatible_settings_are_refused_at_load(recipe, expect):
    with pytest.raises(InputError, match=expect) as info:
        recipe_from_dict(recipe)
    assert "\n" not in str(info.value)


def test_methods_without_class_terms_are_accepted_for_segmentation():
    for spec in ({"method": "dfad"}, {"method": "deepinversion", "ce": 0}, {"confidence": 0}):
        assert recipe_from_dict(_recipe("segmentation", data_free=spec)).distill.data_free is not None


def test_cli_refuses_a_class_conditional_method_for_segmentation_in_one_line(tmp_path):
    recipe = REPO / "recipes" / "sclera_unet.yaml"
    proc = cli("compress", str(recipe), "--out", str(tmp_path / "x"), *sets("distill.data_free.method=dafl"))
    line = one_line_error(proc)
    assert "classification head" in line and "task 'segmentation'" in line


def test_the_guard_catches_a_read_of_the_training_split(tmp_path):
    """Guard: the booby trap above fires when a stage does read training images (taylor calibrates on them)."""
    args = sets("distill.data_free=null", "prune.importance=taylor")
    proc = cli(
        "compress",
        str(DATA_FREE),
        "--out",
        str(tmp_path / "run"),
        *TINY_RUN,
        *args,
        launcher=(sys.executable, "-c", _GUARDED),
    )
    assert proc.returncode != 0 and "training split read" in proc.stderr, proc.stderr[-2000:]
