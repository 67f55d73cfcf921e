"""The hand-written baseline edgekd has to beat: raw torch-pruning, then a plain PyTorch fine-tuning loop.

What an engineer writes without edgekd (issue 18): group-L2 per-layer pruning of the shipped Fashion-MNIST
teacher to at most ``1 - reduction`` of its MACs (``--nearest``: as near it as whole channels allow, on either
side, to size-match edgekd's student) with the classifier kept, then SGD (nesterov, momentum 0.9,
weight decay 5e-4), OneCycle (max lr 0.05), batch 128, random crop (pad 2) + horizontal flip, for ``epochs``
passes over the full 60k training split, with cross-entropy or Hinton KD (T=4, alpha=0.9). No model selection:
the last epoch is kept, and the test split is evaluated once at the end. Nothing from edgekd is imported except
the builder that loads the shipped teacher checkpoint.

    python benchmarks/baseline_raw.py --loss kd --seed 0 --epochs 5 --reduction 0.75 --json out.json
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torch_pruning as tp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgekd.models import build_model  # noqa: E402  (only to load the shipped teacher)
from edgekd.recipe.schema import ModelSpec  # noqa: E402

FMNIST = Path("/usr/share/datasets/fashion-mnist")
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST's training-split pixel statistics


def read_idx(name: str) -> np.ndarray:
    with gzip.open(FMNIST / name) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_split(prefix: str, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.from_numpy(read_idx(f"{prefix}-images-idx3-ubyte.gz").copy())[:limit].unsqueeze(1)
    labels = torch.from_numpy(read_idx(f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64))[:limit]
    return images, labels


def normalise(images: torch.Tensor) -> torch.Tensor:
    return (images.float() / 255.0 - MEAN) / STD


def augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop after zero padding by 2, and a horizontal flip, per image."""
    n, _, h, w = images.shape
    padded = F.pad(images, (2, 2, 2, 2))
    out = torch.empty_like(images)
    dx, dy = torch.randint(0, 5, (n,), generator=gen), torch.randint(0, 5, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    for i in range(n):
        crop = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


def prune(
    teacher: torch.nn.Module, reduction: float, example: torch.Tensor, nearest: bool
) -> torch.nn.Module:
    """The largest per-layer group-L2 ratio whose pruned copy keeps at most ``1 - reduction`` of the MACs, or with
    ``nearest`` the ratio whose MACs cut is nearest ``reduction`` on either side.

    Why ``nearest``: channel counts move in whole channels, so "at most" can land well past the target (-78.2% for
    -75% on ResNet-20: all 16-wide layers lose their 9th channel at once). edgekd lands within its +-1% window
    (-74.7%); comparing the two at different sizes would favour the larger one.
    """
    base, _ = tp.utils.count_ops_and_params(teacher, example)

    def pruned_at(ratio: float) -> torch.nn.Module:
        model = copy.deepcopy(teacher)
        pruner = tp.pruner.MetaPruner(
            model,
            example,
            importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=ratio,
            ignored_layers=[model.fc],
        )
        pruner.step()
        return model

    (low, low_macs), (high, high_macs) = (0.0, base), (0.95, None)
    for _ in range(14):  # bisection on the channel ratio; low stays short of the target, high at or past it
        mid = (low + high) / 2
        macs, _ = tp.utils.count_ops_and_params(pruned_at(mid), example)
        if macs <= (1 - reduction) * base:
            high, high_macs = mid, macs
        else:
            low, low_macs = mid, macs
    if (
        nearest
        and high_macs is not None
        and abs(1 - low_macs / base - reduction) < abs(1 - high_macs / base - reduction)
    ):
        return pruned_at(low)
    return pruned_at(high)


def train(student, teacher, data, args) -> None:
    images, labels = data
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = args.epochs * ((len(images) + 127) // 128)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=steps)
    gen = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        student.train()
        order = torch.randperm(len(images), generator=gen)
        for start in range(0, len(images), 128):
            idx = order[start : start + 128]
            x, y = normalise(augment(images[idx], gen)), labels[idx]
            logits = student(x)
            loss = F.cross_entropy(logits, y)
            if args.loss == "kd":
                with torch.no_grad():
                    soft = F.softmax(teacher(x) / 4.0, dim=1)
                kd = F.kl_div(F.log_softmax(logits / 4.0, dim=1), soft, reduction="batchmean") * 16.0
                loss = 0.9 * kd + 0.1 * loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.4f}", file=sys.stderr, flush=True)


@torch.no_grad()
def accuracy(model, data) -> float:
    model.eval()
    images, labels = data
    correct = sum(
        int((model(normalise(images[i : i + 1000])).argmax(1) == labels[i : i + 1000]).sum())
        for i in range(0, len(images), 1000)
    )
    return correct / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loss", choices=["ce", "kd"], default="kd")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--reduction", type=float, default=0.75)
    parser.add_argument("--train-limit", type=int, default=None)
    parser.add_argument(
        "--nearest",
        action="store_true",
        help="prune to the MACs cut nearest --reduction (either side) instead of at least --reduction",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    teacher = build_model(ModelSpec(name="resnet20"), 10, 1)
    teacher.load_state_dict(torch.load(REPO / "recipes/teachers/fmnist_resnet20.pt", weights_only=True))
    teacher.eval()
    train_data, test_data = load_split("train", args.train_limit), load_split("t10k", None)
    example = normalise(test_data[0][:1])
    student = prune(teacher, args.reduction, example, args.nearest)
    macs = [tp.utils.count_ops_and_params(m, example)[0] for m in (teacher, student)]
    train(student, teacher, train_data, args)
    row = {
        "arm": f"hand_{args.loss}",
        "seed": args.seed,
        "epochs": args.epochs,
        "macs_reduction": 1 - macs[1] / macs[0],
        "teacher_accuracy": accuracy(teacher, test_data),
        "test_accuracy": accuracy(student, test_data),
        "seconds": time.perf_counter() - started,
    }
    print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
