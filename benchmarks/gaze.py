"""Benchmark (issue 5, thesis 001): gaze estimation on ``synth_eyes``, MobileNetV2 1.0 teacher vs compressed students.

    .venv/bin/edgekd train recipes/gaze_mobilenet.yaml --set teacher.checkpoint=null --out runs/gaze_teacher
    .venv/bin/python benchmarks/gaze.py            # reads runs/gaze_teacher/teacher.pt; ~10 min on 2 idle cores

Protocol: everything comes from ``recipes/gaze_mobilenet.yaml`` (data, teacher, optimizer, schedule, epochs);
only the student and ``distill.losses`` change between arms, all with the same seed:

(a) the teacher pruned by the recipe (group L2, −75% MACs), distilled with the recipe's losses: L1 to the labels
    + FitNets hints on ``features.6`` (epoch 1) + output KD (``reg_kd``, L1 to the teacher, from epoch 2);
(a0) the same pruned student fine-tuned on the labels only (L1): what the teacher adds beyond more training;
(b) a MobileNetV2 **width 0.25** from random init, L1 to the labels only (no teacher: the control);
(c) width 0.25, L1 + output KD (``reg_kd``) from epoch 1, no hints;
(d) width 0.25, the recipe's losses: hints on ``features.6`` (8 → 32 channels through the FitNets adaptor),
    then output KD.

The scores are those of the exported ONNX file run by ONNX Runtime (``export_onnx``: parity gate, then the
task's metrics on the eval split): ``angular_error_deg`` (mean angle between predicted and true 3-D gaze
vectors) and ``mae`` (radians, over pitch and yaw). The trainer keeps the best epoch by eval angular error
(epoch 0 = the starting weights), which is also the reported set, as in every edgekd run.
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
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from benchmarks._arms import distill_arm, log, ort_metrics  # noqa: E402
from edgekd import prune  # noqa: E402
from edgekd.data import DataBundle, build_data  # noqa: E402
from edgekd.engine.trainer import seed_everything  # noqa: E402
from edgekd.io import write_json, write_text  # noqa: E402
from edgekd.models import build_model  # noqa: E402
from edgekd.models.complexity import count_complexity  # noqa: E402
from edgekd.recipe import Recipe  # noqa: E402
from edgekd.recipe.schema import ModelSpec  # noqa: E402
from edgekd.run import load_recipe  # noqa: E402
from edgekd.tasks import get_task  # noqa: E402
from edgekd.teacher import build_teacher  # noqa: E402

RECIPE = REPO / "recipes" / "gaze_mobilenet.yaml"
CE = {"name": "ce", "weight": 0.5}
REG_KD = {"name": "reg_kd", "weight": 1.0, "p": 1}
LABELS_ONLY = [{"name": "ce", "weight": 1.0}]
ARMS = {
    "b": ("(b) width 0.25, L1 to labels only (no teacher)", LABELS_ONLY),
    "c": ("(c) width 0.25, + output KD (reg_kd), no hints", [CE, REG_KD]),
    "d": ("(d) width 0.25, + hints (fitnet features.6, epoch 1) + output KD", "recipe"),
}


def train_arm(
    key: str,
    label: str,
    student: nn.Module,
    teacher: nn.Module,
    data: DataBundle,
    recipe: Recipe,
    losses: list[dict] | str,
    work: Path,
) -> dict:
    """Distill ``student`` with ``losses`` (``"recipe"``: the recipe's own) and score its ONNX file."""
    if losses != "recipe":
        recipe = load_recipe(RECIPE, [*OVERRIDES, f"distill.losses={json.dumps(losses)}"])
    return distill_arm(key, label, student, [teacher], data, recipe, work)


OVERRIDES: list[str] = []


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--teacher", type=Path, default=REPO / "runs" / "gaze_teacher" / "teacher.pt")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "gaze-bench")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument(
        "--set", action="append", default=[], help="extra recipe overrides (section.key=value)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("edgekd").setLevel(logging.ERROR)
    OVERRIDES[:] = [f"teacher.checkpoint={args.teacher.resolve()}", *args.set]
    started = time.perf_counter()

    recipe = load_recipe(RECIPE, OVERRIDES)
    seed_everything(recipe.seed)
    data = build_data(recipe.data)
    task = get_task(recipe.task, data)
    teacher = build_teacher(recipe, data)
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="edgekd-gaze-") as tmp:
        work = Path(tmp)
        teacher_cost = count_complexity(teacher, data.example_input(1))
        rows["teacher"] = {
            "label": "teacher: MobileNetV2 1.0",
            "ort": ort_metrics(teacher, data, task, recipe, work / "teacher.onnx"),
            "macs": teacher_cost.macs,
            "params": teacher_cost.params,
        }
        log(f"teacher: {rows['teacher']['ort']}")
        seed_everything(recipe.seed)
        pruned, info = prune.prune_model(teacher, data, task, recipe.prune, recipe.seed)
        rows["pruned"] = {
            "label": "(a) before distillation",
            "ort": ort_metrics(pruned, data, task, recipe, work / "p.onnx"),
        }
        label = f"(a) pruned −{info.macs_reduction:.0%} MACs, recipe losses (hints + output KD)"
        rows["a"] = train_arm("a", label, copy.deepcopy(pruned), teacher, data, recipe, "recipe", work)
        label = "(a0) the same pruned student, L1 to labels only (no teacher)"
        rows["a0"] = train_arm("a0", label, copy.deepcopy(pruned), teacher, data, recipe, LABELS_ONLY, work)
        spec = recipe.teacher.model.model_copy(
            update={"args": {**recipe.teacher.model.args, "width_mult": 0.25}}
        )
        for key, (label, losses) in ARMS.items():
            torch.manual_seed(recipe.seed)
            student = build_model(
                ModelSpec.model_validate(spec.model_dump()), data.num_classes, data.in_channels
            )
            rows[key] = train_arm(key, label, student, teacher, data, recipe, losses, work)
    wall = time.perf_counter() - started
    write_json(
        args.out / "gaze.json", {"rows": rows, "overrides": OVERRIDES, "threads": args.threads, "wall": wall}
    )
    table = markdown(rows, recipe, wall, args.threads)
    write_text(args.out / "gaze.md", table)
    print(table)


def markdown(rows: dict[str, dict], recipe: Recipe, wall: float, threads: int) -> str:
    teacher = rows["teacher"]
    lines = [
        "| model | MACs | params | angular error (°, ORT) | MAE (rad, ORT) | vs teacher (°) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key in ("teacher", "pruned", "a", "a0", "b", "c", "d"):
        row = rows[key]
        macs = row.get("macs")
        size = f"{macs / 1e6:.2f} M" if macs else "as (a)"
        params = f"{row['params'] / 1e3:.0f} k" if row.get("params") else "as (a)"
        err, mae = row["ort"]["angular_error_deg"], row["ort"]["mae"]
        delta = err - teacher["ort"]["angular_error_deg"]
        lines.append(f"| {row['label']} | {size} | {params} | {err:.2f} | {mae:.4f} | {delta:+.2f} |")
    d = recipe.data
    return "\n".join(lines) + (
        f"\n\nsynth_eyes {d.args.get('size')} grey, {d.train_limit or d.args.get('train_size')} training / "
        f"{d.eval_limit or d.args.get('eval_size')} eval images (data seed {d.args.get('seed')}), "
        f"{recipe.distill.epochs} distillation epochs, seed {recipe.seed}, {threads} torch thread(s); "
        f"wall time {wall / 60:.1f} min.\n"
    )


if __name__ == "__main__":
    main()
