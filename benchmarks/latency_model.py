"""Latency-model accuracy (issue 14): predicted vs measured p50 on held-out randomly pruned variants.

For each model (torchvision ResNet-18 and MobileNetV2 at 224², the quickstart ResNet-20 at 28²) and thread
count: calibrate on the local CPU (timed: the calibration's cost), then prune ``--variants`` random variants
(per dependency group a random keep ratio, half rounded to multiples of 8; never used in calibration), time
them through the probe in one bundle, and compare with the prediction. Reports the fraction within ±10% and
the MAPE. Numbers on a loaded machine are noisy; rerun on a quiet one before quoting them.

    .venv/bin/python benchmarks/latency_model.py --quick --models resnet20 --variants 8
    .venv/bin/python benchmarks/latency_model.py                       # all three, 30 variants, 1 and 2 threads
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgekd.latency.calibrate import CalibrationConfig, _run_bundle, calibrate_torch  # noqa: E402
from edgekd.latency.feedback import expected_ms  # noqa: E402
from edgekd.latency.graph import read_layers  # noqa: E402
from edgekd.latency.predictor import error_summary  # noqa: E402
from edgekd.latency.variants import prune_widths, random_plan, to_onnx  # noqa: E402

TEACHER = REPO / "recipes" / "teachers" / "fmnist_resnet20.pt"


def build(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """The model (eval mode) and an input of the size it runs at."""
    if name == "resnet20":
        from edgekd.models.resnet_cifar import resnet_cifar

        model = resnet_cifar(num_classes=10, in_channels=1)
        state = torch.load(TEACHER, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("model", state) if isinstance(state, dict) else state, strict=False)
        return model.eval(), torch.randn(1, 1, 28, 28)
    import torchvision

    return getattr(torchvision.models, name)().eval(), torch.randn(1, 3, 224, 224)


def evaluate(name: str, threads: int, args: argparse.Namespace, cache: str) -> dict:
    model, example = build(name)
    cfg = CalibrationConfig(threads=threads, quick=args.quick, holdout=0, cache=cache)
    started = time.perf_counter()
    result = calibrate_torch(model, example, "local", cfg)
    calibration_s = time.perf_counter() - started
    variants = {
        f"v{i}.onnx": to_onnx(prune_widths(model, example, random_plan(1000 + i)), example)
        for i in range(args.variants)
    }
    measured = _run_bundle("local", variants, cfg.settings(0.5 if args.quick else 1.0))
    predicted = [result.model.predict_layers(read_layers(proto)) for proto in variants.values()]
    measured_ms = [measured[n] for n in variants]
    error = error_summary(predicted, measured_ms)
    # what the prune stage and the report use: the prediction corrected by the teacher's measured p50
    anchored = error_summary([expected_ms(result.model, p) for p in predicted], measured_ms)
    return {
        "model": name,
        "threads": threads,
        "calibration_s": round(calibration_s, 1),
        "calibration_probe_s": round(result.seconds, 1),
        "q": result.model.q,
        "alpha": result.model.alpha,
        "beta_ms": result.model.beta,
        **error,
        "anchored": anchored,
        "teacher_ms": result.model.fit.get("teacher_ms"),
        "pairs": [[round(p, 3), round(measured[n], 3)] for p, n in zip(predicted, variants, strict=True)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,resnet18,mobilenet_v2")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--variants", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="coarse grid, 1 round, short budgets")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    parser.add_argument("--cache", help="keep the fitted models here (default: a temporary directory)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekd-latency-bench-") as tmp:
        cache = args.cache or tmp
        for name in args.models.split(","):
            for threads in args.threads:
                row = evaluate(name, threads, args, cache)
                rows.append(row)
                print(
                    f"{name:14s} threads={threads} within±10% {row['within_10pct']:.0%} MAPE {row['mape']:.1%} "
                    f"(n={row['n']}); teacher-anchored within±10% {row['anchored']['within_10pct']:.0%} "
                    f"MAPE {row['anchored']['mape']:.1%}; calibration {row['calibration_s']:.0f} s",
                    flush=True,
                )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
