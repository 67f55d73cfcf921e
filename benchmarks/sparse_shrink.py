"""What a sparse-training phase did to the channel groups: group norms of a run's ``state/sparse.pt`` against its
teacher's (issue 18).

    .venv/bin/python benchmarks/sparse_shrink.py RUN_DIR

The "before" weights are the run's own teacher (``teacher.checkpoint`` in ``RUN_DIR/recipe.yaml``); the models are
built for Fashion-MNIST's 1×28×28 images and 10 classes, as the issue-18 runs are.

Prints the ratio after/before of the raw group norms (what the penalty did to the weights) over all groups and
over the weakest tenth (the ones the regulariser pushes hardest, ``alpha``×; with ``target: pruned``, over the
penalised groups and the rest), and the share of groups below 10% of
the median norm (relative to each coupled group's mean, as the report and pruning see them) before and after:
whether the phase sparsified anything pruning could then remove cheaply. (Session 7's numbers in RESULTS.md were
ratios of the relative norms: this script read those until session 8.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgekd.models import build_model  # noqa: E402
from edgekd.recipe import load_recipe  # noqa: E402
from edgekd.sparsify import GroupRegularizer, near_zero_share  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="an edgekd run directory with state/sparse.pt")
    args = parser.parse_args()
    recipe = load_recipe(args.run / "recipe.yaml")
    example = torch.zeros(1, 1, 28, 28)

    sparsify = json.loads((args.run / "report.json").read_text())["stages"]["sparsify"]
    reg = sparsify["reg"]  # auto: as sized

    def norms(weights: Path, raw: bool) -> tuple[float, ...]:
        model = build_model(recipe.teacher.model, 10, 1)
        model.load_state_dict(torch.load(weights, weights_only=True))
        return GroupRegularizer(model, example, recipe.prune, reg).group_norms(raw)

    teacher, sparse = Path(recipe.teacher.checkpoint), args.run / "state" / "sparse.pt"
    before, after = norms(teacher, raw=True), norms(sparse, raw=True)
    ratios = sorted(a / b for a, b in zip(after, before, strict=True))
    weakest = sorted(range(len(before)), key=before.__getitem__)[: max(1, len(before) // 10)]
    weak = sorted(after[i] / before[i] for i in weakest)
    print(f"{len(before)} channel groups, reg {reg:.3g}, {recipe.prune.sparsity.epochs} epoch(s)")
    print(
        f"after/before, all groups: min {ratios[0]:.3f}, median {statistics.median(ratios):.3f}, max {ratios[-1]:.3f}"
    )
    print(f"after/before, weakest tenth: min {weak[0]:.3f}, median {statistics.median(weak):.3f}")
    if sparsify.get("target") == "pruned":  # the planned cut: the most-shrunk share is the penalised one
        cut = round(sparsify["penalised_groups"] * len(ratios))
        print(
            f"target: pruned, {cut} groups penalised: after/before median {statistics.median(ratios[:cut]):.3f}, "
            f"max {ratios[cut - 1]:.3f}; the other {len(ratios) - cut}: median {statistics.median(ratios[cut:]):.3f}"
        )
    shares = [near_zero_share(norms(weights, raw=False)) for weights in (teacher, sparse)]
    print(f"groups below 10% of the median norm: {shares[0]:.1%} -> {shares[1]:.1%}")


if __name__ == "__main__":
    main()
