"""Benchmark (issue 7): the non-training path on a 224×224 ImageNet-shaped model, wall-clocked per stage.

    .venv/bin/python benchmarks/nontraining_path.py [--images 256] [--out runs/bench-nontraining]

Model: torchvision ResNet-18, random weights, 3 input channels, 1000 classes, built by edgekd's model builder
(``torchvision:resnet18``). Its BatchNorm running statistics are calibrated on the benchmark's images first
(``--calibrate`` forward passes in train mode, not timed): with untouched statistics (mean 0, var 1) the
activations of a random ResNet-18 grow layer by layer and its logits are not a meaningful parity subject.

Data: real Fashion-MNIST test images (the first ``--images``), bilinearly upsampled from 28×28 to 224×224 and
replicated to 3 channels, held as uint8 like every edgekd dataset; their 10 labels are valid class indices of
the 1000-way head. Building this bundle is not timed.

Timed, at edgekd defaults except the pruning target: ``edgekd.prune.prune_model`` (group L2, 50% of channels, 8
iterative steps) → ``edgekd.export.export_onnx`` (TorchScript export, onnxsim, metadata, checker, parity on
256 images, ORT evaluation of the eval split) → ``edgekd.profile.run`` (local, threads [1, 0], adaptive runs
within 3 s each, fresh probe process per setting). Goal: ≤ 15 s wall on 2 cores.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgekd import export, profile, prune  # noqa: E402
from edgekd.data import build_data  # noqa: E402
from edgekd.data.base import DataBundle, Preprocessing, TensorSplit  # noqa: E402
from edgekd.models import build_model  # noqa: E402
from edgekd.recipe.schema import DataConfig, ExportConfig, ModelSpec, ProfileConfig, PruneConfig  # noqa: E402
from edgekd.tasks import get_task  # noqa: E402

GOAL_S = 15.0


class ExportTimings(logging.Handler):
    """Collects the export stage's own debug line (export / simplify+check / parity / ORT eval seconds)."""

    pattern = re.compile(r"export ([\d.]+)s, simplify\+check ([\d.]+)s, parity ([\d.]+)s, ORT eval ([\d.]+)s")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.parts: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        found = self.pattern.search(record.getMessage())
        if found:
            keys = ("torch.onnx export", "onnxsim + checks", "parity", "ORT eval")
            self.parts = dict(zip(keys, map(float, found.groups()), strict=True))


def upsampled_fmnist(images: int) -> DataBundle:
    """Real Fashion-MNIST test images as 3×224×224 uint8 (bilinear upsampling, grey replicated to RGB)."""
    source = build_data(DataConfig(train_limit=64, eval_limit=images))

    def convert(split: TensorSplit) -> TensorSplit:
        big = F.interpolate(split.images.float(), size=(224, 224), mode="bilinear", align_corners=False)
        return TensorSplit(
            big.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous(), split.targets
        )

    mean, std = source.preprocessing.mean[0], source.preprocessing.std[0]
    return DataBundle(
        name="fashion_mnist_224_rgb",
        train=convert(source.train),
        eval=convert(source.eval),
        num_classes=1000,
        preprocessing=Preprocessing(mean=(mean,) * 3, std=(std,) * 3),
    )


def calibrate_batchnorm(model: torch.nn.Module, data: DataBundle, batches: int) -> None:
    """Set BatchNorm running statistics from real images (train-mode forwards, no gradients)."""
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the calibration batches
    with torch.no_grad():
        for _, (images, _) in zip(range(batches), data.eval_loader(32), strict=False):
            model(images)
    model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=256, help="eval images (parity uses up to 256)")
    parser.add_argument("--calibrate", type=int, default=2, help="BatchNorm calibration batches of 32")
    parser.add_argument("--out", type=Path, default=None, help="keep student.onnx here (default: a temp dir)")
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    logging.basicConfig(level=logging.WARNING)
    timings = ExportTimings()
    logging.getLogger("edgekd.export").addHandler(timings)
    logging.getLogger("edgekd.export").setLevel(logging.DEBUG)

    data = upsampled_fmnist(args.images)
    task = get_task("classification")
    torch.manual_seed(0)
    model = build_model(ModelSpec(name="torchvision:resnet18"), num_classes=1000, in_channels=3)
    calibrate_batchnorm(model, data, args.calibrate)
    load_before = os.getloadavg()[0]

    stages: dict[str, float] = {}
    wall = time.perf_counter()
    start = time.perf_counter()
    student, pruned = prune.prune_model(
        model, data, task, PruneConfig(target="channels", reduction=0.5), seed=0
    )
    stages["prune"] = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        artifact = export.export_onnx(
            export.ParityReference(student, data, task), ExportConfig(), out / "student.onnx"
        )
        stages["export"] = time.perf_counter() - start
        start = time.perf_counter()
        profiles = profile.run({"student.onnx": out / "student.onnx"}, ProfileConfig())["student.onnx"]
        stages["profile"] = time.perf_counter() - start
    total = time.perf_counter() - wall
    load = max(load_before, os.getloadavg()[0])

    cmd = ".venv/bin/python benchmarks/nontraining_path.py"
    rows = [
        f"Command: `{cmd}` (2 cores, 1-min load average ≤ {load:.2f} during the run)",
        "",
        f"ResNet-18 (random weights, BN calibrated), 224×224×3, 1000 classes: {pruned.macs_before / 1e9:.2f} → "
        f"{pruned.macs_after / 1e9:.2f} GMAC (−{100 * pruned.macs_reduction:.1f}%), {pruned.params_before / 1e6:.1f}"
        f" → {pruned.params_after / 1e6:.1f} M params; parity max|Δ| {artifact.parity.max_abs_diff:.1e}, "
        f"agreement {artifact.parity.agreement:.4f} on {artifact.parity.samples} images.",
        "",
        "| stage | seconds | share |",
        "|---|---|---|",
    ]
    split = {"prune (50% channels, 8 steps)": stages["prune"]}
    split.update({f"export: {k}": v for k, v in timings.parts.items()} or {"export": stages["export"]})
    split["profile (baseline + threads 1 and all, fresh processes)"] = stages["profile"]
    for name, seconds in split.items():
        rows.append(f"| {name} | {seconds:.2f} | {100 * seconds / total:.0f}% |")
    verdict = "met" if total <= GOAL_S else "**missed**"
    rows.append(f"| **total wall** | **{total:.2f}** | goal ≤ {GOAL_S:.0f} s: {verdict} |")
    rows.append("")
    for p in profiles:
        rows.append(
            f"- profile threads={p.threads}: p50 {p.latency_ms.p50:.2f} ms, p99 {p.latency_ms.p99:.2f} ms, "
            f"{p.runs} runs ({p.device['measurement']['stop_reason']}), load {p.load_ms:.0f} ms"
        )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
