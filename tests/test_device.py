"""The training device and precision (``device``, ``distill.precision``, ``train.precision``), on this CPU.

What runs here is real: bf16 autocast distillation on the CPU through the real CLI, a checkpoint whose tensors
claim a GPU resumed on the CPU, and the one-line refusals. What cannot run here (a CUDA device, fp16 with its
GradScaler, nccl) is exercised by ``benchmarks/gpu_check.py`` on a GPU machine.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch

from edgekd.data import build_data
from edgekd.distill import DistillObjective
from edgekd.engine.device import CPU, distill_device, resolve_device, teacher_device, training_device
from edgekd.engine.trainer import FitOptions, fit
from edgekd.errors import InputError
from edgekd.models import build_model
from edgekd.models.checkpoint import load_checkpoint
from edgekd.recipe.schema import DataConfig, DistillConfig, LossSpec, ModelSpec
from edgekd.report import validate_report
from edgekd.run import load_recipe
from edgekd.tasks import get_task
from tests.conftest import QUICKSTART, cli, one_line_error, sets

TASK = get_task("classification")
HAS_ACCELERATOR = torch.cuda.is_available() or torch.backends.mps.is_available()
needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")

# compress on 128 images, one epoch, one pruning step, short profiling: every stage runs, in seconds
TINY_RUN = sets(
    "data.train_limit=128",
    "data.eval_limit=64",
    "data.augment=false",
    "data.batch_size=64",
    "distill.epochs=1",
    "prune.iterative_steps=1",
    "profile.threads=[1]",
    "profile.runs=2",
    "profile.warmup=0",
    "profile.op_profile=false",
    "export.parity_samples=16",
)


def tiny(width: int = 4, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelSpec(name="resnet20", args={"width": width}), 10, 1)


@pytest.mark.skipif(HAS_ACCELERATOR, reason="auto picks this machine's GPU")
def test_auto_resolves_to_the_cpu_on_a_machine_without_a_gpu():
    assert resolve_device("auto") == CPU
    assert training_device("auto", "bf16").device == CPU
    assert training_device("AUTO").describe() == "cpu, fp32"


def test_fp16_on_the_cpu_and_a_malformed_device_are_refused_in_one_line():
    """fp16 needs CUDA's GradScaler: refused where the device resolves to the CPU, for either training."""
    for recipe_key in ("distill.precision", "train.precision"):
        recipe = load_recipe(QUICKSTART, ["device=cpu", f"{recipe_key}=fp16"])
        check = distill_device if recipe_key.startswith("distill") else teacher_device
        with pytest.raises(InputError, match=rf"^{recipe_key}: fp16 needs a CUDA device.*use bf16") as info:
            check(recipe)
        assert "\n" not in str(info.value)
    with pytest.raises(InputError, match=r"device: expected auto, cpu, cuda, cuda:N or mps \(got 'gpu'\)$"):
        load_recipe(QUICKSTART, ["device=gpu"])  # the schema refuses it, naming the key


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread in this process, as the CLI runs get (tests.conftest.cli_env): no oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@needs_no_cuda
def test_cuda_on_a_machine_without_cuda_is_bad_input(tmp_path):
    out = tmp_path / "run"
    proc = cli("compress", str(QUICKSTART), "--out", str(out), *sets("device=cuda"))
    line = one_line_error(proc, code=2)
    assert line.startswith("edgekd: error: device: cuda: CUDA is not available on this machine")
    assert line.endswith("use device: auto or device: cpu")
    assert not out.exists()  # refused before any data or teacher loaded, and nothing left behind
    recipe = load_recipe(QUICKSTART, ["device=cuda:1"])
    with pytest.raises(InputError, match=r"^device: cuda:1: CUDA is not available"):
        teacher_device(recipe)  # what `edgekd train` checks first


def test_losses_run_in_float32_under_bf16_autocast(small_data):
    """The forward passes run at bf16; the objective hands every loss float32 tensors (one central cast)."""
    losses = [LossSpec(name="ce"), LossSpec(name="kd"), LossSpec(name="fitnet", student="layer2")]
    objective = DistillObjective(tiny(4), [tiny(8, seed=1)], losses, TASK, 10, small_data.example_input(2))
    images, targets = next(iter(small_data.train_loader(16, augment=False, seed=0)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, terms = objective(images, targets)
    assert objective.student_hooks.features["layer2"].dtype == torch.bfloat16  # autocast did run
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and set(terms) == {"ce", "kd", "fitnet"}
    loss.backward()  # gradients flow back through the cast into the bf16 graph
    objective.close()


def test_bf16_compress_on_the_cpu_trains_a_valid_student_and_reports_device_and_precision(tmp_path):
    out = tmp_path / "run"
    proc = cli("compress", str(QUICKSTART), "--out", str(out), *TINY_RUN, *sets("distill.precision=bf16"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    validate_report(report)
    assert report["recipe"]["device"] == "auto"
    distill = report["stages"]["distill"]
    assert (distill["device"], distill["precision"]) == (str(resolve_device("auto")), "bf16")
    epoch = report["distillation"]["history"][0]
    assert all(torch.isfinite(torch.tensor(v)) for v in [epoch["train_loss"], *epoch["loss_terms"].values()])
    assert all(a["parity"]["passed"] for a in report["artifacts"] if a["parity"] is not None)
    assert "distill: training on" in (out / "edgekd.log").read_text()  # the resolved device is logged


# -- device-neutral checkpoints --------------------------------------------------------------------------------


class Killed(Exception):
    """Stands for the kill of a run: raised by the loss at a chosen step."""


def _train(data, checkpoint: Path, device: str, resume: bool, die_at_step: int | None = None):
    model, criterion, steps = tiny(4), TASK.criterion(), [0]

    def loss_fn(x, y):
        steps[0] += 1
        if steps[0] == die_at_step:
            raise Killed
        return criterion(model(x), y), {}

    options = FitOptions(
        optim=DistillConfig(epochs=2, lr=0.05),
        batch_size=32,
        augment=True,
        seed=0,
        checkpoint=checkpoint,
        resume=resume,
        device=training_device(device),
    )
    fit(model, data, TASK, loss_fn, options)
    return model


def claim_gpu(path: Path) -> None:
    """Rewrite a ``torch.save`` archive so that every tensor says it was saved from ``cuda:0``.

    Why this is a fair stand-in for a checkpoint written on a GPU: torch records each storage's device as the
    location string in ``data.pkl`` (``'cpu'`` here, ``'cuda:0'`` on a GPU) and the bytes are the same, so
    after the rewrite ``torch.load`` without a ``map_location`` refuses the file on a machine without CUDA,
    exactly as it refuses a real GPU checkpoint.
    """
    with zipfile.ZipFile(path) as archive:
        entries = [(info.filename, archive.read(info.filename)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in entries:
            if name.endswith("/data.pkl"):
                assert b"X\x03\x00\x00\x00cpu" in data
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            archive.writestr(name, data)


@needs_no_cuda
def test_a_checkpoint_saved_on_a_gpu_resumes_on_the_cpu_to_the_uninterrupted_weights(tmp_path):
    """Killed in epoch 2 under ``device: auto``, its epoch-1 checkpoint made to claim ``cuda:0``, resumed under
    ``device: cpu``: the weights equal an uninterrupted run's, bit for bit (both train on this CPU)."""
    data = build_data(DataConfig(train_limit=128, eval_limit=32))
    straight = _train(data, tmp_path / "a.pt", "auto", resume=False)
    killed = tmp_path / "b.pt"
    steps_per_epoch = len(data.train_loader(32, augment=True, seed=0))
    with pytest.raises(Killed):
        _train(data, killed, "auto", resume=False, die_at_step=steps_per_epoch + 2)
    claim_gpu(killed)
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(killed, weights_only=True)  # the file really names a GPU
    assert load_checkpoint(killed)["epoch"] == 1
    resumed = _train(data, killed, "cpu", resume=True)
    assert next(resumed.parameters()).device == CPU  # fit hands the model back on the CPU
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
