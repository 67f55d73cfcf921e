"""Benchmark: the README quickstart, end to end, wall-clocked; prints the RESULTS.md table.

    .venv/bin/python benchmarks/quickstart.py [--out runs/quickstart] [--set key=value ...]

Runs the real command (`edgekd compress recipes/quickstart.yaml`) in a subprocess, then summarises its
report.json: teacher vs student size, MACs, accuracy in PyTorch and in ONNX Runtime, latency per thread count,
measured speed-up beside the MACs ratio, and per-stage seconds.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "quickstart")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    cmd = [
        sys.executable,
        "-m",
        "edgekd",
        "compress",
        str(REPO / "recipes" / "quickstart.yaml"),
        "--out",
        str(args.out),
    ]
    for item in args.overrides:
        cmd += ["--set", item]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - start
    print(table(json.loads((args.out / "report.json").read_text()), wall))


def table(report: dict, wall: float) -> str:
    arts = {a["name"]: a for a in report["artifacts"]}
    teacher, student = report["models"]["teacher"], report["models"]["student"]
    t_onnx, s_onnx = arts["teacher.onnx"], arts["student.onnx"]
    comp = report["compression"]
    t_acc, s_acc = teacher["metrics"]["accuracy"], student["metrics"]["accuracy"]
    macs_ratio = teacher["macs"] / student["macs"]
    rows = [
        "| | teacher | student | change |",
        "|---|---|---|---|",
        f"| params | {teacher['params']:,} | {student['params']:,} | −{100 * comp['params_reduction']:.1f}% |",
        f"| MACs (batch 1) | {teacher['macs'] / 1e6:.2f} M | {student['macs'] / 1e6:.2f} M "
        f"| −{100 * comp['macs_reduction']:.1f}% |",
        f"| accuracy, PyTorch | {100 * t_acc:.2f}% | {100 * s_acc:.2f}% | {100 * (s_acc - t_acc):+.2f} pt |",
        f"| accuracy, ONNX Runtime (shipped file) | {100 * t_onnx['metrics']['accuracy']:.2f}% "
        f"| {100 * s_onnx['metrics']['accuracy']:.2f}% | {100 * comp['metric_delta']['accuracy']:+.2f} pt |",
        f"| ONNX size | {t_onnx['size_bytes'] / 1024:.0f} KiB | {s_onnx['size_bytes'] / 1024:.0f} KiB | |",
    ]
    by_threads = {(p["target"], p["threads"]): p for p in t_onnx["profiles"]}
    for p in s_onnx["profiles"]:
        t = by_threads.get((p["target"], p["threads"]))
        if t:
            t50, s50 = t["latency_ms"]["p50"], p["latency_ms"]["p50"]
            rows.append(
                f"| latency p50, ORT {p['target']}, {p['threads']} thread(s) | {t50:.3f} ms | {s50:.3f} ms "
                f"| {t50 / s50:.2f}× faster (MACs ratio {macs_ratio:.2f}×) |"
            )
    parity = s_onnx["parity"]
    rows.append(
        f"| parity (student.onnx vs PyTorch) | | max abs diff {parity['max_abs_diff']:.1e}, "
        f"agreement {parity['agreement']:.4f} | |"
    )
    stages = ", ".join(f"{k} {v['seconds']:.1f}s" for k, v in report["stages"].items())
    env = report["environment"]
    return "\n".join(rows) + (
        f"\n\nWall time of the command: **{wall:.0f} s** ({stages}).\n"
        f"Machine: {env.get('cpu', platform.processor())}, {env.get('cores')} cores; torch {env['torch']}, "
        f"onnxruntime {env['onnxruntime']}.\n"
    )


if __name__ == "__main__":
    main()
