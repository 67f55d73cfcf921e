"""Benchmark (issue 5, thesis 004): multi-class segmentation on ``fashion_scenes``, which distillation loss helps.

    .venv/bin/python benchmarks/fashion_scenes.py [--out runs/fs-bench] [--threads 2] [--set key=value ...]

Protocol: the teacher, data, pruning, optimizer and epochs all come from ``recipes/fashion_scenes_seg.yaml``;
the teacher is pruned **once** (group L2, −75% MACs) and every arm distils a copy of that same pruned student
with the same seed; only ``distill.losses`` (and, for the multi-teacher arms, the teachers) change:

(a) ``ce`` only: fine-tuning on the labels, the control;
(b) ``ce`` + ``pixel_kd`` (T = 1): ``recipes/fashion_scenes_seg.yaml`` as shipped;
(c) ``ce`` + ``cwd`` (channel-wise distillation, the authors' weight 3, τ = 1);
(d) ``ce`` + ``boundary_kd`` (band 2, boundary pixels ×5), one teacher;
(e) ``ce`` + ``multi_teacher`` from both teachers, per-pixel confidence weights, no boundary weighting;
(f) ``ce`` + ``multi_teacher`` with boundary weighting: ``recipes/fashion_scenes_multi_teacher.yaml`` (thesis 004).

Scores are those of each student's exported ONNX file run by ONNX Runtime on the 1000 eval scenes (mIoU over
background + 10 garment classes, Dice, pixel accuracy); the trainer keeps each arm's best epoch by mIoU.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from benchmarks._arms import distill_arm, log, ort_metrics  # noqa: E402
from edgekd import prune  # noqa: E402
from edgekd.data import build_data  # noqa: E402
from edgekd.engine.trainer import seed_everything  # noqa: E402
from edgekd.io import write_json, write_text  # noqa: E402
from edgekd.models.complexity import count_complexity  # noqa: E402
from edgekd.recipe import Recipe  # noqa: E402
from edgekd.run import load_recipe  # noqa: E402
from edgekd.tasks import get_task  # noqa: E402
from edgekd.teacher import build_extra_teachers, build_teacher  # noqa: E402

RECIPE = REPO / "recipes" / "fashion_scenes_seg.yaml"
MULTI = REPO / "recipes" / "fashion_scenes_multi_teacher.yaml"
CE = {"name": "ce", "weight": 1.0}
ARMS: dict[str, tuple[str, list[dict] | Path, bool]] = {  # key: (label, losses or recipe, both teachers)
    "a": ("(a) ce only (fine-tune, no teacher)", [CE], False),
    "b": ("(b) ce + pixel_kd (recipe as shipped)", RECIPE, False),
    "c": ("(c) ce + cwd (weight 3, τ 1)", [CE, {"name": "cwd", "weight": 3.0, "temperature": 1.0}], False),
    "d": ("(d) ce + boundary_kd", [CE, {"name": "boundary_kd", "weight": 1.0, "band": 2}], False),
    "e": (
        "(e) ce + multi_teacher, 2 teachers",
        [CE, {"name": "multi_teacher", "weight": 1.0, "temperature": 1.0}],
        True,
    ),
    "f": ("(f) ce + multi_teacher, 2 teachers, boundary-weighted (multi-teacher recipe)", MULTI, True),
}


def arm_recipe(losses: list[dict] | Path, overrides: list[str]) -> Recipe:
    if isinstance(losses, Path):
        return load_recipe(losses, overrides)
    return load_recipe(RECIPE, [*overrides, f"distill.losses={json.dumps(losses)}"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "fs-bench")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--arms", default="".join(ARMS), help="which arms to run, e.g. 'acf' (default: all)")
    parser.add_argument(
        "--set", action="append", default=[], help="extra recipe overrides (section.key=value)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("edgekd").setLevel(logging.ERROR)
    started = time.perf_counter()

    recipe = load_recipe(RECIPE, args.set)
    seed_everything(recipe.seed)
    data = build_data(recipe.data)
    task = get_task(recipe.task, data)
    teachers = [build_teacher(recipe, data), *build_extra_teachers(load_recipe(MULTI, args.set), data)]
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="edgekd-fs-") as tmp:
        work = Path(tmp)
        for i, teacher in enumerate(teachers):
            cost = count_complexity(teacher, data.example_input(1))
            rows[f"teacher{i + 1}"] = {
                "label": f"teacher {i + 1}" + (" (the pruned one)" if i == 0 else " (extra)"),
                "ort": ort_metrics(teacher, data, task, recipe, work / f"teacher{i}.onnx"),
                "macs": cost.macs,
                "params": cost.params,
            }
            log(f"teacher {i + 1}: {rows[f'teacher{i + 1}']['ort']}")
        seed_everything(recipe.seed)
        pruned, info = prune.prune_model(teachers[0], data, task, recipe.prune, recipe.seed)
        rows["pruned"] = {
            "label": f"pruned −{info.macs_reduction:.1%} MACs, before distillation",
            "ort": ort_metrics(pruned, data, task, recipe, work / "pruned.onnx"),
        }
        for key in args.arms:
            label, losses, both = ARMS[key]
            seed_everything(recipe.seed)
            arm_teachers = teachers if both else teachers[:1]
            student = copy.deepcopy(pruned)
            rows[key] = distill_arm(
                key, label, student, arm_teachers, data, arm_recipe(losses, args.set), work
            )
    wall = time.perf_counter() - started
    report = {"rows": rows, "overrides": args.set, "threads": args.threads, "wall": wall}
    write_json(args.out / "fashion_scenes.json", report)
    table = markdown(rows, recipe, wall, args.threads)
    write_text(args.out / "fashion_scenes.md", table)
    print(table)


def markdown(rows: dict[str, dict], recipe: Recipe, wall: float, threads: int) -> str:
    base = rows["teacher1"]["ort"]
    control = rows.get("a", {}).get("ort")
    lines = [
        "| model | MACs | mIoU (ORT) | Dice | pixel acc. | vs teacher 1 | vs (a) | best epoch | s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, row in rows.items():
        m = row["ort"]
        macs = f"{row['macs'] / 1e6:.2f} M" if row.get("macs") else ""
        vs_a = f"{100 * (m['miou'] - control['miou']):+.2f} pt" if control and key in ARMS else ""
        lines.append(
            f"| {row['label']} | {macs} | {100 * m['miou']:.2f}% | {100 * m['dice']:.2f}% "
            f"| {100 * m['pixel_accuracy']:.2f}% | {100 * (m['miou'] - base['miou']):+.2f} pt | {vs_a} "
            f"| {row.get('best_epoch', '')} | {row.get('seconds', 0):.0f} |"
        )
    d = recipe.data
    return "\n".join(lines) + (
        f"\n\nfashion_scenes {d.args.get('canvas')}×{d.args.get('canvas')}, {d.args.get('train_scenes')} training / "
        f"{d.args.get('eval_scenes')} eval scenes (data seed {d.args.get('seed')}), {recipe.distill.epochs} "
        f"distillation epochs, seed {recipe.seed}, {threads} torch thread(s); wall time {wall / 60:.1f} min.\n"
    )


if __name__ == "__main__":
    main()
