"""Accuracy recovery at a fixed training budget: edgekd's ingredients against the raw hand loop (issue 18).

Each arm compresses the shipped Fashion-MNIST teacher to -75% MACs (or ``--reduction``) with ``--epochs``
passes over the training split in total (sparse training and progressive steps count toward it), and reports the
test accuracy of the shipped ``student.onnx`` in ONNX Runtime, evaluated once. Model selection inside edgekd reads
the validation split only. The hand loop (``benchmarks/baseline_raw.py``) keeps its last epoch.

    python benchmarks/recovery.py --seeds 0 1 2 --epochs 5 --out benchmarks/results/recovery
    python benchmarks/recovery.py --quick      # 1 seed, 1 epoch on 3k images: checks that every arm runs

Arms: ``study_best`` (the best setting of the validation study, ``benchmarks/tune_recovery.py``), and each
isolating one ingredient against ``val_selected``, edgekd's earlier quickstart recipe (``BASE``) at this budget:
``last_epoch`` (no validation split: all 60k train, last epoch kept), ``val_selected``, ``sparse`` (1 epoch of
group-sparse training, then ``epochs - 1`` of distillation), ``progressive`` (3 steps with 1 epoch of KD after
each of the first two, then ``epochs - 2``), ``ce_only`` (the loss choice: no KD term), ``onecycle_kd`` /
``onecycle_ce`` (the hand loop's OneCycle schedule to lr 0.05, with and without the KD term; ``onecycle_kd`` is
the shipped ``recipes/recommended/`` recipes, chosen on validation), ``cached_kd`` / ``plain_ce`` (``onecycle_kd`` /
``onecycle_ce`` on un-augmented images, as the quickstart trains: the teacher's outputs are cached),
``cached_kd09`` (``cached_kd`` weighting CE 0.1 + KD 0.9), ``cached_sparse`` (``cached_kd`` with 1 of its epochs
spent on sparse training, ``reg: auto``), ``cached_planned`` (``cached_sparse`` penalising only the channels the
planned cut removes: ``prune.sparsity.target: pruned``), and ``hand_ce`` /
``hand_kd`` (raw torch-pruning + a plain PyTorch loop, pruned to the MACs cut nearest the target: the same widths
as edgekd's student at -75%; rows before session 7 were pruned to at least the target, -78.2%).

    # KD against CE on validation images the teacher never saw: a teacher trained without data.val's carve
    # (edgekd train recipes/teachers/fmnist_resnet20.train.yaml --out T --set data.val_seed=0), the same carve
    python benchmarks/recovery.py --arms cached_kd plain_ce --set teacher.checkpoint=T/teacher.pt \
        --set data.val_seed=0 --tag clean_val

    # -90% MACs: uniform widths in multiples of 8 stop at -86.6%, so let the widths be any count
    python benchmarks/recovery.py --reduction 0.9 --set prune.round_to=null --arms onecycle_kd hand_ce
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks._compress import artifact, compress_report  # noqa: E402

QUICKSTART = REPO / "recipes" / "quickstart.yaml"


# The best trial of the validation study (benchmarks/tune_recovery.py, trial 4 of recovery-r75), at full scale.
STUDY_BEST = [
    "data.batch_size=64",
    "distill.lr=0.0105",
    "distill.weight_decay=0.000887",
    "distill.losses=[{name: ce, weight: 0.085}, {name: kd, weight: 0.915, temperature: 1.0}, {name: at, weight: 500}]",
    "prune.schedule=progressive",
    "prune.progressive.steps=3",
    "prune.progressive.epochs=1",
]


# What every edgekd arm starts from: the quickstart recipe with the distillation settings it had when these arms
# were defined (CE 0.5 + KD 0.5 at T=4, cosine to lr 0.02, augmented batches). The quickstart itself has since
# moved to cached distillation without augmentation at its 5-minute budget; pinning these keeps every arm's
# meaning, and RESULTS.md's rows, fixed.
BASE = [
    "data.augment=true",
    "distill.schedule=cosine",
    "distill.lr=0.02",
    "distill.losses=[{name: ce, weight: 0.5}, {name: kd, weight: 0.5, temperature: 4.0}]",
]

# The hand loop's optimiser schedule (benchmarks/baseline_raw.py): OneCycle to a peak lr of 0.05.
ONECYCLE = ["distill.schedule=onecycle", "distill.lr=0.05"]


def edgekd_arms(epochs: int) -> dict[str, list[str]]:
    """``--set`` overrides of each edgekd arm on top of the quickstart recipe at ``epochs`` of budget: one
    ingredient changed (``val_selected`` changes none; ``onecycle_kd`` is ``recipes/recommended/``'s), or the
    study's best setting (``study_best``)."""
    return {
        "study_best": [*STUDY_BEST, f"distill.epochs={epochs - 2}"],
        "last_epoch": ["data.val=0", f"distill.epochs={epochs}"],
        "val_selected": [f"distill.epochs={epochs}"],
        "sparse": ["prune.sparsity.epochs=1", f"distill.epochs={epochs - 1}"],
        "progressive": [
            "prune.schedule=progressive",
            "prune.progressive.steps=3",
            "prune.progressive.epochs=1",
            f"distill.epochs={epochs - 2}",
        ],
        "ce_only": [f"distill.epochs={epochs}", "distill.losses=[{name: ce}]"],
        "onecycle_ce": [*ONECYCLE, f"distill.epochs={epochs}", "distill.losses=[{name: ce}]"],
        "onecycle_kd": [*ONECYCLE, f"distill.epochs={epochs}"],
        # The quickstart's finding at 2 epochs, at the full budget: the same images every epoch, so the
        # teacher's outputs are cached (KD then costs what CE costs); the CE arm isolates augmentation from KD.
        "cached_kd": [*ONECYCLE, "data.augment=false", f"distill.epochs={epochs}"],
        # cached_kd leaning on the teacher: CE 0.1 + KD 0.9 (the shipped teacher's own distillation weights)
        "cached_kd09": [
            *ONECYCLE,
            "data.augment=false",
            f"distill.epochs={epochs}",
            "distill.losses=[{name: ce, weight: 0.1}, {name: kd, weight: 0.9, temperature: 4.0}]",
        ],
        # cached_kd with 1 of its epochs given to sparse training at reg: auto (sized to that one epoch)
        "cached_sparse": [
            *ONECYCLE,
            "data.augment=false",
            "prune.sparsity.epochs=1",
            f"distill.epochs={epochs - 1}",
        ],
        # cached_sparse penalising only the channels the cut will remove (prune.sparsity.target: pruned)
        "cached_planned": [
            *ONECYCLE,
            "data.augment=false",
            "prune.sparsity.epochs=1",
            "prune.sparsity.target=pruned",
            f"distill.epochs={epochs - 1}",
        ],
        "plain_ce": [
            *ONECYCLE,
            "data.augment=false",
            f"distill.epochs={epochs}",
            "distill.losses=[{name: ce}]",
        ],
    }


def run_edgekd(arm: str, overrides: list[str], seed: int, args: argparse.Namespace) -> dict:
    common = [f"seed={seed}", f"prune.reduction={args.reduction}", f"data.train_limit={args.train_limit}"]
    common += ["profile.threads=[1]", "profile.time_budget_s=0.5", *BASE]
    started = time.perf_counter()
    name = f"{arm}@{args.tag}" if args.tag else arm
    report = compress_report(QUICKSTART, args.out / f"{name}-seed{seed}", [*common, *overrides, *args.set])
    student, teacher = artifact(report, "student.onnx"), artifact(report, "teacher.onnx")
    return {
        "arm": arm,
        "seed": seed,
        "test_accuracy": student["metrics"]["accuracy"],
        "teacher_accuracy": teacher["metrics"]["accuracy"],
        "val_accuracy": report["models"]["student"].get("val_metrics", {}).get("accuracy"),
        "macs_reduction": report["compression"]["macs_reduction"],
        "best_epoch": report["distillation"]["best_epoch"],
        "seconds": time.perf_counter() - started,
    }


def run_hand(loss: str, seed: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(REPO / "benchmarks" / "baseline_raw.py"), "--loss", loss, "--seed", str(seed)]
    cmd += ["--epochs", str(args.epochs), "--reduction", str(args.reduction), "--nearest"]  # size-matched
    if args.train_limit != "null":
        cmd += ["--train-limit", str(args.train_limit)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"hand_{loss} seed {seed} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(rows: list[dict]) -> str:
    """A Markdown table: mean ± std of test accuracy per arm and the drop from the teacher."""
    lines = [
        "| arm | seeds | test accuracy (edgekd: ORT; hand: PyTorch) | vs teacher | per seed | MACs cut |",
        "|---|---|---|---|---|---|",
    ]
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mine = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["seed"])
        accs = [r["test_accuracy"] for r in mine]
        per_seed = " / ".join(f"{100 * r['test_accuracy']:.2f} (s{r['seed']})" for r in mine)
        teacher = rows[0]["teacher_accuracy"]
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        mean = statistics.mean(accs)
        cut = statistics.mean(r["macs_reduction"] for r in rows if r["arm"] == arm)
        lines.append(
            f"| {arm} | {len(accs)} | {100 * mean:.2f} ± {100 * spread:.2f} % | "
            f"{100 * (mean - teacher):+.2f} pt | {per_seed} | {100 * cut:.1f} % |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--reduction", type=float, default=0.75)
    parser.add_argument("--train-limit", default="null", help="training images (null: all 60k)")
    parser.add_argument("--arms", nargs="+", default=None, help="subset of arms to run")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an override for every edgekd arm, applied after the arm's own, e.g. prune.round_to=null at "
        "--reduction 0.9",
    )
    parser.add_argument(
        "--tag", default="", help="appended to each row's arm as ARM@TAG (e.g. a run against another teacher)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "recovery")
    parser.add_argument("--quick", action="store_true", help="1 seed, 3 epochs on 3k images")
    parser.add_argument("--summarise", action="store_true", help="only print the table of OUT/rows.jsonl")
    args = parser.parse_args()
    if args.summarise:
        rows = [json.loads(line) for line in (args.out / "rows.jsonl").read_text().splitlines()]
        print(summarise([row for row in rows if not args.arms or row["arm"] in args.arms]))
        return
    if args.quick:
        args.seeds, args.epochs, args.train_limit = [0], 3, "3000"
    arms = edgekd_arms(args.epochs)
    chosen = args.arms or [*arms, "hand_ce", "hand_kd"]
    rows_path = args.out / "rows.jsonl"
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        for arm in chosen:
            row = (
                run_hand(arm[5:], seed, args)
                if arm.startswith("hand_")
                else run_edgekd(arm, arms[arm], seed, args)
            )
            if args.tag:
                row["arm"] = f"{row['arm']}@{args.tag}"
            rows.append(row)
            with rows_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            # validation only while runs go on: the choice between arms is made there, test read after it
            val = row.get("val_accuracy")
            shown = f"validation {100 * val:.2f}%" if val is not None else "done (no validation split)"
            print(f"{arm} seed {seed}: {shown} ({row['seconds']:.0f} s)", flush=True)
    print(summarise(rows))


if __name__ == "__main__":
    main()
