"""Benchmark (issue 7): what distillation costs on top of plain training, on the quickstart models.

    .venv/bin/python benchmarks/kd_step.py [--steps 24] [--reps 5] [--epoch-samples 10000]

Both ratios come from ONE process, with the two sides measured alternately (CE, KD, CE, KD, ...) so load from
other processes on the shared machine hits both sides alike; each ratio is the median over repetitions.

1. **KD step ÷ plain CE step, with augmentation** (goal ≤ 1.35). Student: the quickstart teacher pruned by
   ``edgekd.prune.prune_model`` with the quickstart recipe (75% MACs reduction). Both sides train the same student
   copy on the same augmented batches (batch 128): CE runs ``student → cross-entropy → backward → SGD step``;
   KD runs the real :class:`~edgekd.distill.DistillObjective` with the quickstart losses (CE 0.5 + KD 0.5,
   T = 4), i.e. the frozen teacher's forward on every step as well. Batch assembly is excluded on both sides.
2. **Cached-teacher epoch ÷ plain CE epoch, without augmentation** (goal ≤ 1.1). Both sides run
   :func:`edgekd.engine.trainer.fit` for one epoch over the first ``--epoch-samples`` training images; the
   KD side reads the teacher's outputs from the cache that ``DistillObjective.cache_teacher`` fills once. The
   one-off cache fill is reported separately and amortised over the quickstart's 4 epochs.

Prints a Markdown block for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgekd import prune  # noqa: E402
from edgekd.data import build_data  # noqa: E402
from edgekd.data.base import DataBundle, TensorSplit  # noqa: E402
from edgekd.distill import DistillObjective  # noqa: E402
from edgekd.engine.trainer import FitOptions, build_optimizer, fit  # noqa: E402
from edgekd.run import load_recipe  # noqa: E402
from edgekd.tasks import get_task  # noqa: E402
from edgekd.teacher import build_teacher  # noqa: E402

QUICKSTART_EPOCHS = 4


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=24, help="training steps per timed block")
    parser.add_argument("--reps", type=int, default=5, help="alternating repetitions of each side")
    parser.add_argument("--epoch-samples", type=int, default=10000, help="training images in a timed epoch")
    parser.add_argument("--epoch-reps", type=int, default=2, help="alternating epochs of each side")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")

    recipe = load_recipe(REPO / "recipes" / "quickstart.yaml")
    task = get_task(recipe.task)
    data = build_data(recipe.data)
    teacher = build_teacher(recipe, data)
    student, pruned = prune.prune_model(teacher, data, task, recipe.prune, recipe.seed)
    student.requires_grad_(True)
    bs = recipe.data.batch_size
    load = os.getloadavg()[0]

    step = step_ratio(teacher, student, data, recipe, task, args.steps, args.reps)
    epoch = epoch_ratio(teacher, student, data, recipe, task, args.epoch_samples, args.epoch_reps)
    load = max(load, os.getloadavg()[0])
    print(
        report(pruned.macs_reduction, bs, step, epoch, args, load, torch.get_num_threads(), data.num_classes)
    )


def step_ratio(teacher, student, data, recipe, task, steps: int, reps: int) -> dict:
    """Median over ``reps`` of (side block time ÷ CE block time), blocks of ``steps`` augmented batches.

    Sides, alternated within every repetition: plain CE; KD as the recipe runs it (teacher BN-folded and
    ``channels_last``, ``distill.fuse_teacher``); KD with the teacher module as it is; and plain CE with a
    ``channels_last`` student (the candidate switch for the student's own training step).
    """
    loader = data.train_loader(recipe.data.batch_size, augment=True, seed=recipe.seed)
    batches = [b for _, b in zip(range(steps), loader, strict=False)]
    sides: dict[str, tuple] = {}
    objectives = []

    def add_ce(name: str, channels_last: bool) -> None:
        model = copy.deepcopy(student).train()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)

        def loss(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            return F.cross_entropy(model(images), targets)

        sides[name] = (loss, build_optimizer(model.parameters(), recipe.distill))

    def add_kd(name: str, fuse: bool) -> None:
        model = copy.deepcopy(student).train()
        objective = DistillObjective(
            model, [teacher], recipe.distill.losses, task, data.num_classes, data.example_input(2), fuse
        )
        objectives.append(objective)
        sides[name] = (lambda x, y: objective(x, y)[0], build_optimizer(model.parameters(), recipe.distill))

    add_ce("ce", channels_last=False)
    add_kd("kd", fuse=recipe.distill.fuse_teacher)
    add_kd("kd_unfused", fuse=False)
    add_ce("ce_channels_last", channels_last=True)

    def block(loss_fn, optimizer: torch.optim.Optimizer) -> float:
        start = time.perf_counter()
        for images, targets in batches:
            loss = loss_fn(images, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return (time.perf_counter() - start) / len(batches)

    def teacher_block(objective: DistillObjective) -> float:
        start = time.perf_counter()
        for images, _targets in batches:
            objective.teacher_forward(images)
        return (time.perf_counter() - start) / len(batches)

    for loss_fn, optimizer in sides.values():  # warm-up: allocator, oneDNN primitive caches
        block(loss_fn, optimizer)
    times: dict[str, list[float]] = {name: [] for name in [*sides, "teacher", "teacher_unfused"]}
    for _ in range(reps):
        for name, (loss_fn, optimizer) in sides.items():
            times[name].append(block(loss_fn, optimizer))
        times["teacher"].append(teacher_block(objectives[0]))
        times["teacher_unfused"].append(teacher_block(objectives[1]))
    for objective in objectives:
        objective.close()
    out = {f"{name}_ms": 1000 * statistics.median(values) for name, values in times.items()}
    for name in times:
        per_rep = [v / c for v, c in zip(times[name], times["ce"], strict=True)]
        out[f"{name}_ratio"] = statistics.median(per_rep)
    return out


def epoch_ratio(teacher, student, data: DataBundle, recipe, task, samples: int, reps: int) -> dict:
    """One ``fit`` epoch of plain CE vs. of the objective with cached teacher outputs (no augmentation)."""
    subset = DataBundle(
        name=data.name,
        train=data.train.head(samples),
        eval=TensorSplit(data.eval.images[:256], data.eval.targets[:256]),  # fit evaluates every epoch
        num_classes=data.num_classes,
        preprocessing=data.preprocessing,
    )
    optim = recipe.distill.model_copy(update={"epochs": 1})
    options = FitOptions(optim=optim, batch_size=recipe.data.batch_size, augment=False, seed=recipe.seed)

    def ce_epoch() -> float:
        model = copy.deepcopy(student).train()

        def loss(images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            value = F.cross_entropy(model(images), targets)
            return value, {"ce": float(value.detach())}

        return fit(model, subset, task, loss, options).history[0].seconds

    def kd_epoch() -> tuple[float, float]:
        model = copy.deepcopy(student).train()
        objective = DistillObjective(
            model,
            [teacher],
            recipe.distill.losses,
            task,
            data.num_classes,
            data.example_input(2),
            recipe.distill.fuse_teacher,
        )
        start = time.perf_counter()
        in_order = subset.train_loader(recipe.data.batch_size, augment=False, seed=recipe.seed, shuffle=False)
        if not objective.cache_teacher(in_order, int(recipe.distill.teacher_cache_mib * 2**20)):
            raise SystemExit("teacher outputs did not fit the cache budget")
        fill = time.perf_counter() - start
        seconds = (
            fit(model, subset, task, objective, options, extra_modules=objective.losses).history[0].seconds
        )
        objective.close()
        return seconds, fill

    ce, kd, fills = [], [], []
    for _ in range(reps):
        ce.append(ce_epoch())
        seconds, fill = kd_epoch()
        kd.append(seconds)
        fills.append(fill)
    ce_s, kd_s, fill_s = statistics.median(ce), statistics.median(kd), statistics.median(fills)
    return {
        "ratio": statistics.median(k / c for k, c in zip(kd, ce, strict=True)),
        "ce_s": ce_s,
        "kd_s": kd_s,
        "fill_s": fill_s,
        "amortised": (fill_s + QUICKSTART_EPOCHS * kd_s) / (QUICKSTART_EPOCHS * ce_s),
        "samples": len(subset.train),
    }


def report(macs_reduction, bs, step, epoch, args, load, threads, classes) -> str:
    def verdict(value: float, goal: float) -> str:
        return "met" if value <= goal else "**missed**"

    cmd = ".venv/bin/python benchmarks/kd_step.py"
    extra = {
        "--steps": (args.steps, 24),
        "--reps": (args.reps, 5),
        "--epoch-samples": (args.epoch_samples, 10000),
        "--epoch-reps": (args.epoch_reps, 2),
    }
    cmd += "".join(f" {k} {v}" for k, (v, default) in extra.items() if v != default)
    return "\n".join(
        [
            f"Command: `{cmd}` (torch threads {threads}, 1-min load average ≤ {load:.2f} during the run)",
            "",
            f"Student: quickstart teacher pruned by `edgekd.prune.prune_model` (−{100 * macs_reduction:.1f}% MACs), "
            f"batch {bs}, {classes} classes.",
            "",
            "| measure | value | goal | |",
            "|---|---|---|---|",
            f"| KD step ÷ CE step, with augmentation | **{step['kd_ratio']:.2f}** "
            f"({step['kd_ms']:.1f} ms ÷ {step['ce_ms']:.1f} ms) | ≤ 1.35 | {verdict(step['kd_ratio'], 1.35)} |",
            f"| ↳ teacher forward (fused, channels_last, inference_mode) | {step['teacher_ms']:.1f} ms/step | | |",
            f"| KD step ÷ CE step, teacher unfused (`distill.fuse_teacher: false`) "
            f"| {step['kd_unfused_ratio']:.2f} ({step['kd_unfused_ms']:.1f} ms) | | |",
            f"| ↳ teacher forward (as is, inference_mode) | {step['teacher_unfused_ms']:.1f} ms/step | | |",
            f"| CE step, student channels_last ÷ contiguous | {step['ce_channels_last_ratio']:.2f} "
            f"({step['ce_channels_last_ms']:.1f} ms) | < 1 to adopt | |",
            f"| cached-teacher epoch ÷ CE epoch, no augmentation | **{epoch['ratio']:.2f}** "
            f"({epoch['kd_s']:.2f} s ÷ {epoch['ce_s']:.2f} s, {epoch['samples']} images) | ≤ 1.1 "
            f"| {verdict(epoch['ratio'], 1.1)} |",
            f"| one-off cache fill | {epoch['fill_s']:.2f} s | | |",
            f"| amortised over {QUICKSTART_EPOCHS} epochs: (fill + {QUICKSTART_EPOCHS} cached epochs) ÷ "
            f"{QUICKSTART_EPOCHS} CE epochs | {epoch['amortised']:.2f} | | |",
        ]
    )


if __name__ == "__main__":
    main()
