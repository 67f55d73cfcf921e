"""Benchmark (issue 16): how close does data-free distillation get to distilling with the real training split?

    .venv/bin/python benchmarks/data_free.py --quick    # proves the harness: 1 seed, -50% MACs, a few steps
    .venv/bin/python benchmarks/data_free.py            # full: 3 seeds, -50% and -75% MACs (~45 min, 2 cores)

Protocol: the shipped teacher (``recipes/teachers/fmnist_resnet20.pt``) is pruned once per (reduction, seed)
with ``recipes/data_free.yaml``'s ``prune`` section (group L2, weight-only). Every arm then trains a copy of
that same pruned student for the same number of student updates (``epochs x steps_per_epoch``, batch
``batch``), with the recipe's optimizer, LR schedule and seed, and keeps the last epoch (no arm selects on
held-out data: the data-free arms have none). The score is the accuracy of the exported ONNX file run by ONNX
Runtime on the Fashion-MNIST test split (parity-gated export, as ``edgekd compress`` ships it), mean ± sample
std over seeds.

Arms: the pruned student before any training; distilled with the real training split (today's path: CE 0.5 +
KD 0.5, augmented, ``epochs x steps_per_epoch x batch`` training images); distilled data-free (KD on teacher
labels) with ``deepinversion``, ``dafl``, ``dfad`` and ``two_generators``; and the thesis' ablation, the two
generators' halves (``use: hard``, ``use: easy``) with the same memory bank. ``deepinversion`` and the
two-generator arms keep a 2048-sample memory bank (replay 0.5); ``dafl`` and ``dfad`` run as in their papers,
without one. The synthesis seconds (generator/input updates and teacher labelling) are reported per arm.

Budget: every trained arm gets 2 x 50 updates of 64 samples in full mode (100 updates: the real arm sees 6400
training images). ``--seeds-slow N`` runs the slowest arm (deepinversion) on the first N seeds only (default:
1 in full mode, to keep the total near 45 minutes on 2 cores; the table's ``n=`` says how many ran), and
``--steps N`` sets the updates per epoch. torch runs single-threaded by default (``--threads``): on a shared
2-core machine two intra-op threads contending with other processes were several times slower.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from benchmarks._arms import log, ort_metrics  # noqa: E402
from edgekd import distill, prune  # noqa: E402
from edgekd.context import RunContext  # noqa: E402
from edgekd.data import build_data  # noqa: E402
from edgekd.engine.trainer import seed_everything  # noqa: E402
from edgekd.io import write_json, write_text  # noqa: E402
from edgekd.run import load_recipe  # noqa: E402
from edgekd.rundir import RunDir  # noqa: E402
from edgekd.tasks import get_task  # noqa: E402
from edgekd.teacher import build_teacher  # noqa: E402

RECIPE = REPO / "recipes" / "data_free.yaml"
BANK = {"memory_bank": 2048, "replay": 0.5}


@dataclass(frozen=True)
class Mode:
    """Budget of one benchmark mode: every trained arm gets ``epochs x steps_per_epoch`` updates of ``batch``."""

    name: str
    seeds: tuple[int, ...]
    reductions: tuple[float, ...]
    epochs: int
    steps_per_epoch: int
    batch: int
    eval_limit: int | None
    di_iterations: int


QUICK = Mode("quick", (0,), (0.5,), 1, 4, 32, 500, 4)
FULL = Mode("full", (0, 1, 2), (0.5, 0.75), 2, 50, 64, None, 100)


@dataclass(frozen=True)
class Arm:
    key: str
    label: str
    data_free: dict | None  # None: the real training split; {}: the pruned student, untrained
    slow: bool = False


ARMS = (
    Arm("pruned", "pruned, before any training", {}),
    Arm("real", "distilled with the real training split (CE + KD)", None),
    Arm("deepinversion", "data-free: deepinversion (+ bank)", {"method": "deepinversion", **BANK}, slow=True),
    Arm("dafl", "data-free: dafl", {"method": "dafl"}),
    Arm("dfad", "data-free: dfad", {"method": "dfad"}),
    Arm("two_generators", "data-free: two_generators (G1 + G2, bank)", {"method": "two_generators", **BANK}),
    Arm("g1_hard", "  ablation: G1 hard only (bank)", {"method": "two_generators", "use": "hard", **BANK}),
    Arm("g2_easy", "  ablation: G2 easy only (bank)", {"method": "two_generators", "use": "easy", **BANK}),
)


def overrides(mode: Mode, arm: Arm, reduction: float, seed: int) -> list[str]:
    """The recipe of one run: the data-free recipe at this budget, reduction and seed."""
    common = [
        f"seed={seed}",
        f"prune.reduction={reduction}",
        f"distill.epochs={mode.epochs}",
        f"data.eval_limit={json.dumps(mode.eval_limit)}",
        f"data.batch_size={mode.batch}",
        f"data.train_limit={mode.epochs * mode.steps_per_epoch * mode.batch}",
    ]
    if arm.data_free is None:  # today's path: the training split, CE on its labels + KD
        losses = [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5, "temperature": 4.0}]
        return [*common, "distill.data_free=null", f"distill.losses={json.dumps(losses)}"]
    spec = {"steps_per_epoch": mode.steps_per_epoch, "batch_size": mode.batch, **arm.data_free}
    if arm.data_free.get("method") != "two_generators":
        spec = {"memory_bank": 0, **spec}
    if arm.data_free.get("method") == "deepinversion":
        spec["iterations"] = mode.di_iterations
    return [*common, f"distill.data_free={json.dumps(spec)}"]


def run_arm(arm: Arm, recipe, pruned, teacher, data, work: Path) -> dict:
    """Train (or not) one copy of ``pruned`` and score its ONNX file in ONNX Runtime."""
    task = get_task(recipe.task, data)
    student = copy.deepcopy(pruned).requires_grad_(True)
    started = time.perf_counter()
    row: dict = {"arm": arm.key}
    if arm.data_free != {}:
        ctx = RunContext(recipe=recipe, run=RunDir(work), data=data, task=task, teachers=(teacher,))
        batches = distill.build_synthetic_batches(ctx, student) if recipe.distill.data_free else None
        distill.train_student(ctx, student, None, batches)
        if batches is not None:
            row.update(synthetic_samples=batches.samples, synthesis_seconds=round(batches.seconds, 1))
            batches.close()
    row["train_seconds"] = round(time.perf_counter() - started, 1)
    row["accuracy"] = ort_metrics(student.eval(), data, task, recipe, work / f"{arm.key}.onnx")["accuracy"]
    return row


def summarise(rows: list[dict], mode: Mode) -> str:
    """A markdown table: one row per arm, one column per reduction (ORT accuracy, mean ± std over seeds)."""
    head = " | ".join(f"−{int(r * 100)}% MACs" for r in mode.reductions)
    lines = [
        f"| arm | {head} | train s (mean) | synthesis s (mean) |",
        "|---|" + "---:|" * (len(mode.reductions) + 2),
    ]
    for arm in ARMS:
        cells, mine = [], [r for r in rows if r["arm"] == arm.key]
        for reduction in mode.reductions:
            acc = [r["accuracy"] for r in mine if r["reduction"] == reduction]
            std = f" ± {100 * statistics.stdev(acc):.2f}" if len(acc) > 1 else ""
            cells.append(f"{100 * statistics.fmean(acc):.2f}{std} (n={len(acc)})" if acc else "–")
        seconds = statistics.fmean([r["train_seconds"] for r in mine]) if mine else 0.0
        synth = [r["synthesis_seconds"] for r in mine if "synthesis_seconds" in r]
        synth_cell = f"{statistics.fmean(synth):.0f}" if synth else "–"
        lines.append(f"| {arm.label} | {' | '.join(cells)} | {seconds:.0f} | {synth_cell} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a few steps on one seed and one reduction")
    parser.add_argument("--out", type=Path, default=None, help="where data_free.json/.md go (default runs/)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument(
        "--seeds-slow",
        type=int,
        default=None,
        help="seeds for deepinversion (default: 1 in full mode, all in quick)",
    )
    parser.add_argument("--steps", type=int, default=None, help="steps_per_epoch override (budget per arm)")
    parser.add_argument("--arms", default=None, help="comma-separated arm keys (default all)")
    parser.add_argument("--reductions", type=float, nargs="+", help="MACs cuts (default: the mode's)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the mode's)")
    parser.add_argument(
        "--merge", type=Path, nargs="+", help="only print the table of these runs' json files"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    mode = QUICK if args.quick else FULL
    if args.steps:
        mode = dataclasses.replace(mode, steps_per_epoch=args.steps)
    if args.reductions or args.seeds:  # one slice of the protocol, e.g. to run two reductions side by side
        mode = dataclasses.replace(
            mode, reductions=tuple(args.reductions or mode.reductions), seeds=tuple(args.seeds or mode.seeds)
        )
    if args.merge:
        found = [row for path in args.merge for row in json.loads(path.read_text())["rows"]]
        rows = list(
            {(r["arm"], r["reduction"], r["seed"]): r for r in reversed(found)}.values()
        )  # first wins
        mode = dataclasses.replace(mode, reductions=tuple(sorted({r["reduction"] for r in rows})))
        print(summarise(rows, mode))
        return
    seeds_slow = args.seeds_slow if args.seeds_slow is not None else (None if args.quick else 1)
    arms = [a for a in ARMS if args.arms is None or a.key in args.arms.split(",")]
    out = args.out or REPO / "runs" / f"data_free_{mode.name}"
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    base = load_recipe(RECIPE, overrides(mode, ARMS[1], mode.reductions[0], 0))
    data = build_data(base.data)  # the real arm's training images; the data-free arms never read them
    task = get_task(base.task, data)
    teacher = build_teacher(base, data)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="edgekd-df-bench-") as tmp:
        for reduction in mode.reductions:
            for i, seed in enumerate(mode.seeds):
                seed_everything(seed)
                recipe = load_recipe(RECIPE, overrides(mode, ARMS[0], reduction, seed))
                pruned, _ = prune.prune_model(teacher, data, task, recipe.prune, seed)
                for arm in arms:
                    if arm.slow and seeds_slow is not None and i >= seeds_slow:
                        continue
                    recipe = load_recipe(RECIPE, overrides(mode, arm, reduction, seed))
                    row = run_arm(arm, recipe, pruned, teacher, data, Path(tmp))
                    rows.append({**row, "reduction": reduction, "seed": seed})
                    log(f"−{reduction:.0%} seed {seed} {arm.key}: {row}")
                    write_json(
                        out / "data_free.partial.json", {"mode": mode.name, "rows": rows}
                    )  # survives a kill
    table = summarise(rows, mode)
    total = time.perf_counter() - started
    command = "benchmarks/data_free.py" + (" --quick" if args.quick else "")
    write_json(
        out / "data_free.json", {"mode": mode.name, "command": command, "seconds": total, "rows": rows}
    )
    write_text(out / "data_free.md", f"`{command}` ({total / 60:.1f} min)\n\n{table}")
    print(table)
    print(f"total {total:.0f} s ({total / 60:.1f} min); results in {out}")


if __name__ == "__main__":
    main()
