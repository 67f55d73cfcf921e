"""Benchmark: would the student train better in ``channels_last`` on this CPU? Speed, exactness and safety.

    .venv/bin/python benchmarks/train_layout.py [--steps 8] [--reps 5] [--threads 1]

edgekd trains in PyTorch's default (contiguous, NCHW) layout. This measures what ``channels_last`` (NHWC) would
change, so the choice can be revisited per PyTorch release and CPU (results: benchmarks/RESULTS.md, "Training-step
memory layout").

For the quickstart's teacher (ResNet-20), its student pruned by ``edgekd.prune.prune_model`` with the quickstart
recipe (-75% MACs), and edgekd's MobileNetV2 (width 0.5, depthwise convolutions), on augmented Fashion-MNIST
batches of 128:

1. **Speed**: one CE training step (forward, backward, SGD) in ``channels_last`` ÷ the same step contiguous.
   Both layouts are timed alternately in one process (blocks of ``--steps`` steps, ``--reps`` times), so load
   from other processes hits both alike; the ratio is the median over repetitions. Below 1: channels_last is
   faster here.
2. **Exactness**: the relative error (L2 over all parameters) of one batch's float32 gradients against the same
   batch in float64, per layout. It shows what the layout costs in arithmetic, not speed.
3. **Safety**: three training steps of a CIFAR ResNet-8 at stem widths 2-16 in ``channels_last``, each in its own
   process (batch 48): the exit status of each (134 = the C library aborted on a corrupted heap).

Prints a Markdown block for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgekd import prune  # noqa: E402
from edgekd.data import build_data  # noqa: E402
from edgekd.models import build_model  # noqa: E402
from edgekd.recipe.schema import ModelSpec  # noqa: E402
from edgekd.run import load_recipe  # noqa: E402
from edgekd.tasks import get_task  # noqa: E402
from edgekd.teacher import build_teacher  # noqa: E402

LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def models(recipe, data) -> dict[str, nn.Module]:
    """The three models timed: the quickstart teacher, its pruned student, a MobileNetV2 (depthwise convs)."""
    teacher = build_teacher(recipe, data)
    student, _ = prune.prune_model(teacher, data, get_task(recipe.task), recipe.prune, recipe.seed)
    torch.manual_seed(0)
    mobilenet = build_model(
        ModelSpec(
            name="mobilenet_v2",
            args={"width_mult": 0.5, "stem_stride": 1, "dropout": 0.0, "channels_last": False},
        ),
        data.num_classes,
        data.in_channels,
    )
    return {
        "ResNet-20 teacher": teacher,
        "ResNet-20 student (-75% MACs)": student,
        "MobileNetV2 0.5": mobilenet,
    }


def step_fn(model: nn.Module, layout: str, batches: list) -> callable:
    """A closure running one CE training step per call on a private copy of ``model`` in ``layout``."""
    model = copy.deepcopy(model).train().requires_grad_(True).to(memory_format=LAYOUTS[layout])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    inputs = [(x.contiguous(memory_format=LAYOUTS[layout]), y) for x, y in batches]

    def step(i: int) -> None:
        images, targets = inputs[i % len(inputs)]
        loss = F.cross_entropy(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def speed_ratio(model: nn.Module, batches: list, steps: int, reps: int) -> tuple[float, float]:
    """(median of channels_last ÷ contiguous block time, contiguous ms per step)."""
    steppers = {layout: step_fn(model, layout, batches) for layout in LAYOUTS}
    for step in steppers.values():
        step(0)  # oneDNN builds its kernels for this shape and layout
    times: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
    for _ in range(reps):
        for layout, step in steppers.items():
            started = time.perf_counter()
            for i in range(steps):
                step(i)
            times[layout].append(time.perf_counter() - started)
    ratios = [cl / c for cl, c in zip(times["channels_last"], times["contiguous"], strict=True)]
    return statistics.median(ratios), 1000 * statistics.median(times["contiguous"]) / steps


def gradient_error(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Relative L2 error of each layout's float32 gradients against the float64 ones, on one batch."""

    def grads(dtype: torch.dtype, layout: str) -> torch.Tensor:
        copy_ = copy.deepcopy(model).train().requires_grad_(True).to(dtype).to(memory_format=LAYOUTS[layout])
        x = images.to(dtype).contiguous(memory_format=LAYOUTS[layout])
        F.cross_entropy(copy_(x), targets).backward()
        return torch.cat([p.grad.double().flatten() for p in copy_.parameters()])

    exact = grads(torch.float64, "contiguous")
    return {layout: float((grads(torch.float32, layout) - exact).norm() / exact.norm()) for layout in LAYOUTS}


CRASH_CHECK = """
import sys, torch
from edgekd.models import build_model
from edgekd.recipe.schema import ModelSpec
torch.manual_seed(0)
model = build_model(ModelSpec(name="resnet_cifar", args={"depth": 8, "width": int(sys.argv[1])}), 10, 1)
model = model.train().to(memory_format=torch.channels_last)
images = torch.randn(48, 1, 28, 28).contiguous(memory_format=torch.channels_last)
for _ in range(3):
    out = model(images)
    (out * torch.randn(out.shape)).sum().backward()
"""


def crash_check(widths: list[int]) -> dict[int, int]:
    """``{stem width: exit status}`` of :data:`CRASH_CHECK` run in a fresh process per width."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return {
        w: subprocess.run(
            [sys.executable, "-c", CRASH_CHECK, str(w)], env=env, capture_output=True
        ).returncode
        for w in widths
    }


def cpu_name() -> str:
    """The CPU's model name (layout speed depends on it: see the module docstring)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=8, help="training steps per timed block")
    parser.add_argument("--reps", type=int, default=5, help="alternating repetitions of each layout")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (the quickstart uses all cores)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    recipe = load_recipe(REPO / "recipes" / "quickstart.yaml")
    data = build_data(recipe.data.model_copy(update={"train_limit": 2048, "eval_limit": 256}), recipe.seed)
    loader = data.train_loader(recipe.data.batch_size, augment=True, seed=0)
    loader.set_epoch(1)
    batches = [(b.images, b.targets) for _, b in zip(range(4), loader.indexed(), strict=False)]
    rows = []
    for name, model in models(recipe, data).items():
        ratio, ms = speed_ratio(model, batches, args.steps, args.reps)
        errors = gradient_error(model, *batches[0])
        rows.append(
            f"| {name} | **{ratio:.2f}** | {ms:.0f} ms | {errors['contiguous']:.1e} | {errors['channels_last']:.1e} |"
        )
    one, five, _ = os.getloadavg()
    print(
        f"{cpu_name()}, torch {torch.__version__}, {args.threads} thread(s), "
        f"batch {recipe.data.batch_size}, load {one:.2f} / {five:.2f} on {os.cpu_count()} cores\n"
    )
    print(
        "| model | train step, channels_last ÷ contiguous | contiguous step | gradient error vs float64, "
        "contiguous | channels_last |"
    )
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    statuses = crash_check([2, 3, 4, 5, 6, 7, 8, 9, 12, 16])
    print("\nchannels_last training, ResNet-8 by stem width: exit status of 3 steps in a fresh process\n")
    print("| width | " + " | ".join(str(w) for w in statuses) + " |")
    print("|---|" + "---|" * len(statuses))
    print("| exit status | " + " | ".join(str(rc) for rc in statuses.values()) + " |")


if __name__ == "__main__":
    main()
