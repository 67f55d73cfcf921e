"""Latency targeting vs MACs targeting at equal measured latency (issue 14, "better than MACs targeting").

For each model (torchvision ResNet-18 and MobileNetV2 at 224², random init, BatchNorm in eval; the quickstart
ResNet-20 teacher at 28²) on the local CPU at 1 thread:

1. MACs-targeted students: cost-aware allocation (importance per MAC saved, ``round_to`` 8) at each of
   ``--cuts`` of the teacher's MACs; teacher and these students are timed side by side (``--rounds``
   interleaved passes, each model's lowest p50 kept).
2. For each MACs student, a latency-targeted student whose budget is that student's measured p50 (as a fraction
   of the teacher's p50 measured in the same run, so the two share one measurement), allocated by importance
   per predicted millisecond saved against the cached latency model (``--cache``, from
   ``benchmarks/latency_model.py`` or ``latency_prune.py``; calibrated now when missing).
3. Teacher, MACs and latency students timed again side by side; the rows compare what each kept: the share of
   the groups' importance mass (group L2 of the weights, the same criterion for both), parameters and MACs,
   at their measured p50.

Importance is weight magnitude, which BatchNorm statistics do not change, so random init with default BN
statistics ranks channels as it would after calibrating BN on data.

    .venv/bin/python benchmarks/latency_vs_macs.py --cache runs/latency-cache-quiet --json runs/bench/lvm.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from latency_model import build  # noqa: E402
from latency_prune import TASK, add_model_args, data_for, timed  # noqa: E402

from edgekd.latency.calibrate import CalibrationConfig, ensure_latency_model  # noqa: E402
from edgekd.latency.variants import to_onnx  # noqa: E402
from edgekd.prune.allocate import CostAllocator, LatencyGoal  # noqa: E402
from edgekd.recipe.schema import PruneConfig  # noqa: E402


def summary(result: object) -> dict:
    return {
        "importance_kept": result.importance_kept,  # type: ignore[attr-defined]
        "macs_reduction": result.macs_reduction,  # type: ignore[attr-defined]
        "params_reduction": result.params_reduction,  # type: ignore[attr-defined]
        "params_after": result.params_after,  # type: ignore[attr-defined]
    }


def compare(name: str, args: argparse.Namespace) -> list[dict]:
    model, example = build(name)
    data = data_for(name, example)
    example = data.example_input(1)
    latency = ensure_latency_model(
        model, example, "local", CalibrationConfig(threads=1, cache=args.cache)
    ).model
    predicted_teacher = latency.predict([(layer.cin, layer.cout) for layer in latency.layers])
    protos, rows = {"teacher.onnx": to_onnx(model, example)}, []
    for cut in args.cuts:
        cfg = PruneConfig(target="macs", reduction=cut, allocation="cost", round_to=args.round_to)
        pruned, result, _ = CostAllocator(model, data, TASK, cfg, seed=0).prune()
        protos[f"macs{cut}.onnx"] = to_onnx(pruned, example)
        rows.append({"model": name, "macs_cut_goal": cut, "macs": summary(result)})
    first = timed(protos, args.rounds)
    for row in rows:
        fraction = first[f"macs{row['macs_cut_goal']}.onnx"] / first["teacher.onnx"]
        cfg = PruneConfig(target="latency", reduction=1 - fraction, round_to=args.round_to)
        started = time.perf_counter()
        pruned, result, _ = CostAllocator(model, data, TASK, cfg, seed=0).prune(
            LatencyGoal(latency, fraction * predicted_teacher)
        )
        row.update(
            fraction_of_teacher=fraction,
            latency=summary(result),
            latency_prune_s=time.perf_counter() - started,
        )
        protos[f"lat{row['macs_cut_goal']}.onnx"] = to_onnx(pruned, example)
    second = timed(protos, args.rounds)
    for row in rows:
        cut = row["macs_cut_goal"]
        row["teacher_ms"] = second["teacher.onnx"]
        row["macs"]["measured_ms"] = second[f"macs{cut}.onnx"]
        row["latency"]["measured_ms"] = second[f"lat{cut}.onnx"]
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_args(parser)
    parser.add_argument("--cuts", nargs="+", type=float, default=[0.3, 0.5, 0.7])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [row for name in args.models for row in compare(name, args)]
    print("\n| model | MACs arm cut | arm | p50 ms | ÷ teacher | importance kept | params cut | MACs cut |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        for arm in ("macs", "latency"):
            a = r[arm]
            print(
                f"| {r['model']} | {r['macs_cut_goal']:.0%} | {arm} | {a['measured_ms']:.3f} | "
                f"{a['measured_ms'] / r['teacher_ms']:.3f} | {a['importance_kept']:.3f} | "
                f"{a['params_reduction']:.1%} | {a['macs_reduction']:.1%} |"
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
