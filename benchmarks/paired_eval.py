"""Is a difference between two recovery arms bigger than what the evaluation images alone would produce?

Why: ``benchmarks/recovery.py`` reports each arm as mean ± std over seeds, but every seed is scored on the same
10,000 test images (and, with ``data.val_seed``, the same 5,000 validation images). The seed spread says how much
training noise moves a number; it says nothing about which images happened to be drawn into the split, and that
part does not average out over seeds. Two classifiers that disagree on a share ``d`` of ``n`` images have a paired
accuracy difference with a standard error of about ``sqrt(d / n)``: 0.2 pt for ``d`` = 4% on 10k images, 0.28 pt
on 5k. This script scores the shipped ``student.onnx`` of two arms' run directories, image by image, on the
validation split each run carved and on the test split, and puts a bootstrap interval over images (McNemar's
paired setting; Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993) around the seed-mean difference.

    python benchmarks/paired_eval.py --a runs/s8/cached_kd/*-seed* --b runs/s8/plain_ce/*-seed*

Runs are paired by their recipe's seed (each seed's validation carve is then the same images for both arms).
Classification runs only.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from edgekd.data import build_data  # noqa: E402
from edgekd.export.ort import OrtPredictor, create_session  # noqa: E402
from edgekd.run import load_recipe  # noqa: E402


@dataclass(frozen=True)
class Scored:
    """One run's per-image correctness on a split, and a fingerprint of that split's images."""

    seed: int
    correct: np.ndarray  # bool per image
    images_key: str  # the same key for two runs means the same images in the same order
    nearest: np.ndarray | None = None  # pixel L2 distance of each image to its nearest training image


def nearest_training_distance(images: torch.Tensor, train: torch.Tensor) -> np.ndarray:
    """Pixel-space L2 distance (intensities in [0, 1]) from each image to its nearest training image.

    Why: if validation images had near-copies among the training images more often than test images do, a
    student that imitates a teacher fitted to those copies would gain on validation only.
    """
    flat_train = train.reshape(len(train), -1).float() / 255
    train_sq = (flat_train * flat_train).sum(1)
    out = []
    for chunk in images.reshape(len(images), -1).float().div(255).split(1000):
        dist = (chunk * chunk).sum(1, keepdim=True) - 2 * chunk @ flat_train.T + train_sq
        out.append(dist.min(1).values.clamp_min(0).sqrt())
    return torch.cat(out).numpy()


def correctness(run_dir: Path, neighbours: bool = False) -> dict[str, Scored]:
    """Per-image correctness of ``run_dir/student.onnx`` on the run's validation split and on the test split
    (with ``neighbours``, also each image's distance to its nearest image in the run's training split)."""
    recipe = load_recipe(run_dir / "recipe.yaml")
    if recipe.task != "classification":
        raise SystemExit(f"{run_dir}: task {recipe.task!r}; only classification is compared")
    data = build_data(recipe.data, recipe.seed, recipe.teacher.model.name)
    predict = OrtPredictor(create_session(run_dir / "student.onnx", threads=1))
    scored = {}
    splits = (("validation", data.val, data.val_loader(1000)), ("test", data.eval, data.eval_loader(1000)))
    for split, kept, loader in splits:
        hits, digest = [], hashlib.sha1()
        for images, targets in loader:
            hits.append((predict(images).argmax(1) == targets).numpy())
            digest.update(images.numpy().tobytes())
        nearest = nearest_training_distance(kept.images, data.train.images) if neighbours else None
        scored[split] = Scored(recipe.seed, np.concatenate(hits), digest.hexdigest(), nearest)
    return scored


def bootstrap_mean_difference(
    pairs: list[tuple[Scored, Scored]], draws: int, rng: np.random.Generator
) -> np.ndarray:
    """``draws`` bootstrap replicates of the seed-mean accuracy difference (A − B), resampling images.

    Seeds scored on the same images share one resample per draw (their image noise is common); seeds on
    different images (each seed's own validation carve) are resampled independently.
    """
    by_images: dict[str, list[np.ndarray]] = {}
    for a, b in pairs:
        by_images.setdefault(a.images_key, []).append(a.correct.astype(float) - b.correct.astype(float))
    total = np.zeros(draws)
    for diffs in by_images.values():
        stacked = np.stack(diffs)  # seeds x images
        index = rng.integers(0, stacked.shape[1], size=(draws, stacked.shape[1]))
        total += np.stack([stacked[:, row].mean(1).sum() for row in index])
    return total / len(pairs)


def pair_by_seed(a_runs: Iterable[Path], b_runs: Iterable[Path], neighbours: bool) -> list[tuple[dict, dict]]:
    a = {s["test"].seed: s for s in (correctness(run, neighbours) for run in a_runs)}
    b = {s["test"].seed: s for s in (correctness(run) for run in b_runs)}
    seeds = sorted(a.keys() & b.keys())
    if not seeds:
        raise SystemExit("no seed is in both --a and --b")
    return [(a[seed], b[seed]) for seed in seeds]


def describe(split: str, pairs: list[tuple[Scored, Scored]], replicates: np.ndarray) -> str:
    diffs = [100 * (a.correct.mean() - b.correct.mean()) for a, b in pairs]
    disagree = np.mean([100 * (a.correct != b.correct).mean() for a, b in pairs])
    low, high = np.percentile(100 * replicates, [2.5, 97.5])
    shared = len({a.images_key for a, _ in pairs}) == 1
    return (
        f"| {split} | {len(pairs[0][0].correct)} ({'same' if shared else 'own'} per seed) | "
        f"{np.mean(diffs):+.2f} pt | {' / '.join(f'{d:+.2f}' for d in diffs)} | "
        f"{np.std(100 * replicates):.2f} pt | [{low:+.2f}, {high:+.2f}] | {disagree:.2f}% |"
    )


def by_neighbour_distance(split: str, runs: list[tuple[dict, dict]]) -> str:
    """(A − B) in each third of the split's images, ranked by distance to their nearest training image."""
    cells = []
    for third in range(3):
        diffs = []
        for a, b in runs:
            order = np.argsort(a[split].nearest)
            part = order[third * len(order) // 3 : (third + 1) * len(order) // 3]
            diffs.append(100 * (a[split].correct[part].mean() - b[split].correct[part].mean()))
        cells.append(f"{np.mean(diffs):+.2f} pt")
    return f"| {split} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", type=Path, nargs="+", required=True, help="run directories of arm A")
    parser.add_argument("--b", type=Path, nargs="+", required=True, help="run directories of arm B")
    parser.add_argument("--draws", type=int, default=2000, help="bootstrap replicates")
    parser.add_argument(
        "--neighbours",
        action="store_true",
        help="also split A − B by each image's distance to its nearest training image (thirds; ~1 min per run)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    runs = pair_by_seed(args.a, args.b, args.neighbours)
    print(
        "| split | images | A − B, seed mean | per seed | image-bootstrap std | 95% interval | A, B disagree on |"
    )
    print("|---|---|---|---|---|---|---|")
    replicates = {}
    for split in ("validation", "test"):
        pairs = [(a[split], b[split]) for a, b in runs]
        replicates[split] = bootstrap_mean_difference(pairs, args.draws, rng)
        print(describe(split, pairs, replicates[split]))
    observed = [
        np.mean([100 * (a[split].correct.mean() - b[split].correct.mean()) for a, b in runs])
        for split in ("validation", "test")
    ]
    low, high = np.percentile(100 * (replicates["validation"] - replicates["test"]), [2.5, 97.5])
    print(
        f"\n(A − B) on validation minus (A − B) on test: {observed[0] - observed[1]:+.2f} pt, image-bootstrap "
        f"95% interval [{low:+.2f}, {high:+.2f}]: "
        + ("0 is inside (within what drawing the images explains)" if low <= 0 <= high else "0 is outside")
    )
    if args.neighbours:
        print("\n| split | A − B, nearest third | middle third | farthest third |\n|---|---|---|---|")
        for split in ("validation", "test"):
            print(by_neighbour_distance(split, runs))


if __name__ == "__main__":
    main()
