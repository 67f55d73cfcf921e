"""Benchmark (issue 4): which distillation method best recovers a ≥ 74%-MACs-pruned Fashion-MNIST ResNet-20?

    .venv/bin/python benchmarks/ablation.py --quick     # ≤ 10 min on 2 cores: 2 seeds, a small subset
    .venv/bin/python benchmarks/ablation.py             # full: 3 seeds, 20k training images, full test set

Protocol: the shipped teacher (``recipes/teachers/fmnist_resnet20.pt``) is pruned once per seed with the
quickstart recipe's ``prune`` section (group L2, 75% MACs target). Every arm then trains a copy of that same
pruned architecture with the quickstart's optimizer, LR schedule, augmentation and epochs, and with the same
seed. Only ``distill.losses`` differs between arms, and the from-scratch arms also re-initialise the weights.
The score is the accuracy of the exported ONNX file run by ONNX Runtime (``export_onnx``: simplify, parity
gate, ORT evaluation), reported as mean ± sample std over seeds.

Arms: (a) prune + fine-tune with CE only; (b) + ``kd``; (c) + ``dkd``; (d) + ``dist``; (e) + ``kd_corrected``;
(f) + ``fitnet``; (g) + ``channel_corr``; (h) the best combination: CE + the best logit loss of (b)–(e) + the
feature loss of the better of (f)–(g), picked by mean accuracy *on the same eval set*, so (h) is optimistic by
selection; (i) the pruned architecture from scratch with CE; (j) from scratch with CE + ``kd``.

Caveats that hold in both modes: the trainer keeps the best epoch by eval-set accuracy (epoch 0 = the weights it
starts from), which is also the reported set; and torch runs single-threaded by default (``--threads``),
because on this shared 2-core machine two intra-op threads contending with other processes were 4× slower.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from edgekd import distill, prune  # noqa: E402
from edgekd.context import RunContext  # noqa: E402
from edgekd.data import DataBundle, build_data  # noqa: E402
from edgekd.engine.trainer import seed_everything  # noqa: E402
from edgekd.export import ParityReference, export_onnx  # noqa: E402
from edgekd.io import write_json, write_text  # noqa: E402
from edgekd.models.complexity import count_complexity  # noqa: E402
from edgekd.recipe import Recipe  # noqa: E402
from edgekd.run import load_recipe  # noqa: E402
from edgekd.rundir import RunDir  # noqa: E402
from edgekd.tasks import get_task  # noqa: E402
from edgekd.teacher import build_teacher  # noqa: E402

QUICKSTART = REPO / "recipes" / "quickstart.yaml"
MIN_MACS_REDUCTION = 0.74


@dataclass(frozen=True)
class Mode:
    """Data, epochs and seeds of one benchmark mode (the rest comes from the quickstart recipe)."""

    name: str
    seeds: tuple[int, ...]
    train_limit: int | None
    eval_limit: int | None
    epochs: int

    def overrides(self) -> list[str]:
        """``--set``-style recipe overrides (``null`` = the whole split)."""
        return [
            f"data.train_limit={json.dumps(self.train_limit)}",
            f"data.eval_limit={json.dumps(self.eval_limit)}",
            f"distill.epochs={self.epochs}",
            "data.augment=true",  # as when these arms were measured (the quickstart has since dropped it)
        ]


QUICK = Mode("quick", seeds=(0, 1), train_limit=2000, eval_limit=2000, epochs=2)
FULL = Mode("full", seeds=(0, 1, 2), train_limit=20000, eval_limit=None, epochs=3)


@dataclass(frozen=True)
class Arm:
    key: str
    label: str
    losses: tuple[dict, ...]
    scratch: bool = False


CE_ONLY = ({"name": "ce", "weight": 1.0},)
CE_HALF = {"name": "ce", "weight": 0.5}
LOGIT = {
    "kd": {"name": "kd", "weight": 0.5, "temperature": 4.0},
    "dkd": {"name": "dkd", "weight": 0.5, "alpha": 1.0, "beta": 8.0, "temperature": 4.0, "warmup": 2},
    "dist": {"name": "dist", "weight": 0.5, "beta": 1.0, "gamma": 1.0, "temperature": 1.0},
    "kd_corrected": {"name": "kd_corrected", "weight": 0.5, "temperature": 4.0, "confidence_threshold": 0.9},
}
FEATURE = {
    "fitnet": {"name": "fitnet", "weight": 1.0, "student": ["layer2", "layer3"]},
    "channel_corr": {"name": "channel_corr", "weight": 0.5, "student": "layer3"},
}
ARMS = (
    Arm("a", "prune + fine-tune, CE only", CE_ONLY),
    Arm("b", "+ kd", (CE_HALF, LOGIT["kd"])),
    Arm("c", "+ dkd", (CE_HALF, LOGIT["dkd"])),
    Arm("d", "+ dist", (CE_HALF, LOGIT["dist"])),
    Arm("e", "+ kd_corrected (swap, confidence ≥ 0.9)", (CE_HALF, LOGIT["kd_corrected"])),
    Arm("f", "+ fitnet (layer2, layer3)", (CE_HALF, FEATURE["fitnet"])),
    Arm("g", "+ channel_corr (layer3)", (CE_HALF, FEATURE["channel_corr"])),
    Arm("i", "same architecture from scratch, CE", CE_ONLY, scratch=True),
    Arm("j", "same architecture from scratch, CE + kd", (CE_HALF, LOGIT["kd"]), scratch=True),
)


@dataclass
class Run:
    seed: int
    ort_accuracy: float
    torch_accuracy: float
    best_epoch: int
    seconds: float


@dataclass
class ArmResult:
    arm: Arm
    runs: list[Run] = field(default_factory=list)

    def accuracies(self) -> list[float]:
        return [r.ort_accuracy for r in self.runs]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies())

    @property
    def std(self) -> float:
        return statistics.stdev(self.accuracies()) if len(self.runs) > 1 else float("nan")


def arm_recipe(base: list[str], losses: tuple[dict, ...]) -> Recipe:
    """The quickstart recipe with the mode's overrides and this arm's losses (validated like a user's)."""
    return load_recipe(QUICKSTART, [*base, f"distill.losses={json.dumps(list(losses))}"])


def reinitialise(model: nn.Module, seed: int) -> None:
    """Fresh weights for the same architecture, as the CIFAR ResNets initialise them."""
    torch.manual_seed(seed)
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


def ort_accuracy(model: nn.Module, data: DataBundle, recipe: Recipe, path: Path) -> float:
    """Accuracy of ``model`` exported to ONNX (simplified, parity-gated) and run by ONNX Runtime."""
    task = get_task(recipe.task)
    artifact = export_onnx(
        ParityReference(model, data, task), recipe.export, path, metadata={"role": "student"}
    )
    return artifact.metrics["accuracy"]


def run_arm(
    arm: Arm, base: list[str], pruned: nn.Module, teacher: nn.Module, data: DataBundle, seed: int, work: Path
) -> Run:
    recipe = arm_recipe(base, arm.losses)
    student = copy.deepcopy(pruned)
    if arm.scratch:
        reinitialise(student, seed)
    started = time.perf_counter()
    recipe = recipe.model_copy(update={"seed": seed})
    ctx = RunContext(
        recipe=recipe, run=RunDir(work), data=data, task=get_task(recipe.task), teachers=(teacher,)
    )
    result = distill.train_student(ctx, student)
    accuracy = ort_accuracy(student, data, recipe, work / f"{arm.key}-seed{seed}.onnx")
    run = Run(seed, accuracy, result.metrics["accuracy"], result.best_epoch, time.perf_counter() - started)
    log(
        f"seed {seed} ({arm.key}) {arm.label}: ORT accuracy {accuracy:.4f}, best epoch {run.best_epoch}, "
        f"{run.seconds:.0f} s"
    )
    return run


def prune_per_seed(
    teacher: nn.Module, data: DataBundle, recipe: Recipe, seeds: tuple[int, ...], work: Path
) -> tuple[dict[int, nn.Module], list[float]]:
    """The pruned student of every seed and its ORT accuracy before any training.

    All seeds are pruned before any training, because distillation freezes the teacher in place
    (``requires_grad=False``), and torch-pruning then finds nothing to prune.
    """
    task = get_task(recipe.task)
    pruned_by_seed, accuracies = {}, []
    for seed in seeds:
        seed_everything(seed)
        pruned, info = prune.prune_model(teacher, data, task, recipe.prune, seed)
        if info.macs_reduction < MIN_MACS_REDUCTION:
            raise SystemExit(f"pruning removed only {info.macs_reduction:.1%} of MACs (< 74%)")
        pruned_by_seed[seed] = pruned
        accuracies.append(ort_accuracy(pruned, data, recipe, work / f"pruned-seed{seed}.onnx"))
        log(
            f"seed {seed}: pruned −{info.macs_reduction:.1%} MACs, ORT accuracy before training {accuracies[-1]:.4f}"
        )
    return pruned_by_seed, accuracies


def best_combination(results: dict[str, ArmResult]) -> Arm:
    """(h): CE + the best logit loss of (b)–(e) + the feature loss of the better of (f)–(g)."""
    logit_arm = max("bcde", key=lambda k: results[k].mean)
    feature_arm = max("fg", key=lambda k: results[k].mean)
    logit = results[logit_arm].arm.losses[1]
    feature = results[feature_arm].arm.losses[1]
    label = f"best combination: ce + {logit['name']} ({logit_arm}) + {feature['name']} ({feature_arm})"
    return Arm("h", label, (CE_HALF, logit, feature))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 seeds, 2k training images, 2 epochs, 2k eval images"
    )
    parser.add_argument("--out", type=Path, default=None, help="where ablation.json/.md go (default runs/)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args()
    mode = QUICK if args.quick else FULL
    out = args.out or REPO / "runs" / f"ablation-{mode.name}"
    torch.set_num_threads(args.threads)
    logging.getLogger("edgekd").setLevel(logging.ERROR)
    started = time.perf_counter()

    base = mode.overrides()
    recipe = arm_recipe(base, CE_ONLY)
    data = build_data(recipe.data)
    teacher = build_teacher(recipe, data)
    results = {arm.key: ArmResult(arm) for arm in ARMS}
    with tempfile.TemporaryDirectory(prefix="edgekd-ablation-") as tmp:
        work = Path(tmp)
        teacher_acc = ort_accuracy(teacher, data, recipe, work / "teacher.onnx")
        log(f"teacher: ORT accuracy {teacher_acc:.4f}")
        pruned_by_seed, pruned_acc = prune_per_seed(teacher, data, recipe, mode.seeds, work)
        for seed in mode.seeds:
            for arm in ARMS:
                results[arm.key].runs.append(
                    run_arm(arm, base, pruned_by_seed[seed], teacher, data, seed, work)
                )
        combo = best_combination(results)
        results["h"] = ArmResult(combo)
        for seed in mode.seeds:
            results["h"].runs.append(run_arm(combo, base, pruned_by_seed[seed], teacher, data, seed, work))

    cost = count_complexity(pruned_by_seed[mode.seeds[0]], data.example_input(1))
    teacher_cost = count_complexity(teacher, data.example_input(1))
    wall = time.perf_counter() - started
    summary = {
        "mode": asdict(mode),
        "threads": args.threads,
        "teacher_ort_accuracy": teacher_acc,
        "pruned_ort_accuracy_before_training": pruned_acc,
        "macs": {"teacher": teacher_cost.macs, "student": cost.macs},
        "arms": {
            k: {
                "label": r.arm.label,
                "losses": list(r.arm.losses),
                "scratch": r.arm.scratch,
                "mean": r.mean,
                "std": r.std,
                "runs": [asdict(x) for x in r.runs],
            }
            for k, r in sorted(results.items())
        },
        "wall_seconds": wall,
    }
    table = markdown(
        results, mode, teacher_acc, pruned_acc, 1 - cost.macs / teacher_cost.macs, wall, args.threads
    )
    write_json(out / "ablation.json", summary)
    write_text(out / "ablation.md", table)
    print(table)


def markdown(
    results: dict[str, ArmResult],
    mode: Mode,
    teacher_acc: float,
    pruned_acc: list[float],
    macs_removed: float,
    wall: float,
    threads: int,
) -> str:
    base = results["a"].mean
    rows = [
        f"| arm | losses | ORT accuracy, mean ± std ({len(mode.seeds)} seeds) | vs teacher | vs (a) | s/run |",
        "|---|---|---|---|---|---|",
    ]
    for key in sorted(results):
        r = results[key]
        losses = " + ".join(f"{spec['name']} {spec['weight']:g}" for spec in r.arm.losses)
        rows.append(
            f"| ({key}) {r.arm.label} | {losses} | {100 * r.mean:.2f} ± {100 * r.std:.2f}% "
            f"| {100 * (r.mean - teacher_acc):+.2f} pt | {100 * (r.mean - base):+.2f} pt "
            f"| {statistics.fmean(x.seconds for x in r.runs):.0f} |"
        )
    train = mode.train_limit or "all 60k"
    evals = mode.eval_limit or "all 10k"
    return "\n".join(rows) + (
        f"\n\nTeacher (ORT): {100 * teacher_acc:.2f}%. Pruned student: −{100 * macs_removed:.1f}% MACs, "
        f"{100 * statistics.fmean(pruned_acc):.2f}% before training. Mode `{mode.name}`: seeds {list(mode.seeds)}, "
        f"{train} training images, {mode.epochs} epochs, {evals} eval images, {threads} torch thread(s). "
        f"Wall time {wall / 60:.1f} min.\n"
    )


if __name__ == "__main__":
    main()
