"""Benchmark: thesis 000's sclera recipe end to end; prints the RESULTS.md table.

    .venv/bin/python benchmarks/sclera.py [--out runs/sclera] [--set key=value ...]

Runs the real command (``edgekd compress recipes/sclera_unet.yaml``) in a subprocess and summarises its
report.json against the issue's goal: at least 74% of the teacher's MACs removed for at most 1.27 points of
mIoU lost (student minus teacher, both evaluated as ONNX files in ONNX Runtime on the eval split).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOAL_MACS, GOAL_MIOU_DROP_PT = 0.74, 1.27
METRICS = ("miou", "dice", "pixel_accuracy")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "sclera")
    parser.add_argument("--recipe", type=Path, default=REPO / "recipes" / "sclera_unet.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    cmd = [sys.executable, "-m", "edgekd", "compress", str(args.recipe), "--out", str(args.out)]
    for item in args.overrides:
        cmd += ["--set", item]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - start
    report = json.loads((args.out / "report.json").read_text())
    print(table(report, wall, max(load_before, os.getloadavg()[0])))


def table(report: dict, wall: float, load: float) -> str:
    arts = {a["name"]: a for a in report["artifacts"]}
    teacher, student = report["models"]["teacher"], report["models"]["student"]
    t_onnx, s_onnx = arts["teacher.onnx"], arts["student.onnx"]
    comp = report["compression"]
    rows = [
        "| | teacher | student | change |",
        "|---|---|---|---|",
        f"| params | {teacher['params']:,} | {student['params']:,} | −{100 * comp['params_reduction']:.1f}% |",
        f"| MACs (batch 1, 36×60) | {teacher['macs'] / 1e6:.2f} M | {student['macs'] / 1e6:.2f} M "
        f"| −{100 * comp['macs_reduction']:.1f}% |",
    ]
    for name in METRICS:
        t, s = teacher["metrics"][name], student["metrics"][name]
        rows.append(f"| {name}, PyTorch | {100 * t:.2f}% | {100 * s:.2f}% | {100 * (s - t):+.2f} pt |")
    for name in METRICS:
        t, s = t_onnx["metrics"][name], s_onnx["metrics"][name]
        rows.append(
            f"| {name}, ONNX Runtime (shipped files) | {100 * t:.2f}% | {100 * s:.2f}% | {100 * (s - t):+.2f} pt |"
        )
    by_threads = {(p["target"], p["threads"]): p for p in t_onnx["profiles"]}
    for p in s_onnx["profiles"]:
        t = by_threads.get((p["target"], p["threads"]))
        if t:
            t50, s50 = t["latency_ms"]["p50"], p["latency_ms"]["p50"]
            threads = p["threads"] or "all"
            rows.append(
                f"| latency p50, ORT {p['target']}, {threads} thread(s) | {t50:.3f} ms | {s50:.3f} ms "
                f"| {t50 / s50:.2f}× faster |"
            )
    parity = s_onnx["parity"]
    rows.append(
        f"| parity (student.onnx vs PyTorch) | | max abs diff {parity['max_abs_diff']:.1e}, "
        f"pixel agreement {parity['agreement']:.4f} | |"
    )
    drop = 100 * (t_onnx["metrics"]["miou"] - s_onnx["metrics"]["miou"])
    met = comp["macs_reduction"] >= GOAL_MACS and drop <= GOAL_MIOU_DROP_PT
    stages = ", ".join(f"{k} {v['seconds']:.1f}s" for k, v in report["stages"].items())
    env = report["environment"]
    return "\n".join(rows) + (
        f"\n\n**Goal (≥ {100 * GOAL_MACS:.0f}% MACs removed for ≤ {GOAL_MIOU_DROP_PT} pt mIoU): "
        f"{'met' if met else 'missed'}** — {100 * comp['macs_reduction']:.1f}% of the MACs removed, mIoU "
        f"{'dropped' if drop >= 0 else 'rose'} by {abs(drop):.2f} pt (ONNX Runtime).\n\n"
        f"Wall time of the command: {wall:.0f} s ({stages}); 1-min load average ≤ {load:.2f}.\n"
        f"Machine: {env.get('cpu')}, {env.get('cores')} cores; torch {env['torch']}, "
        f"onnxruntime {env['onnxruntime']}.\n"
    )


if __name__ == "__main__":
    main()
