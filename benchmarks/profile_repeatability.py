"""Benchmark (issue 7): how repeatable is `edgekd profile`? Five consecutive runs of the same model.

    .venv/bin/python benchmarks/profile_repeatability.py [--runs 5] [--model FILE.onnx] [--min-time S ...]

Model (unless ``--model``): the quickstart student, the shipped teacher pruned by ``edgekd.prune.prune_model`` with the
quickstart recipe and exported by ``edgekd.export.export_onnx``. It runs in ~0.3 ms, the hard case for a
profiler: its median's confidence interval narrows within a dozen runs, so it is the model whose numbers
move most between runs.

Each run is the real command, ``edgekd profile MODEL --json``, at its defaults (threads 1 and all cores,
adaptive runs within 3 s each, fresh probe process per setting). Spread of p50 per thread setting:
``(max - min) / median`` over the runs. Goal: ≤ 5%.

``--min-time S`` (repeatable) adds a sweep over the probe's minimum measuring time (``profile.min_time_s``)
through the Python API the command calls (``edgekd.profile.run``), five runs per value, interleaved so load
from other processes hits every value alike. ``0`` reproduces the protocol before issue 7.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GOAL = 0.05


def quickstart_student(out_dir: Path) -> Path:
    """Export the quickstart's pruned (not distilled: latency does not depend on the weights) student."""
    from edgekd import export, prune
    from edgekd.data import build_data
    from edgekd.run import load_recipe
    from edgekd.tasks import get_task
    from edgekd.teacher import build_teacher

    recipe = load_recipe(
        REPO / "recipes" / "quickstart.yaml", ["data.eval_limit=256", "data.train_limit=256"]
    )
    data, task = build_data(recipe.data), get_task(recipe.task)
    student, _ = prune.prune_model(build_teacher(recipe, data), data, task, recipe.prune, recipe.seed)
    path = out_dir / "student.onnx"
    export.export_onnx(export.ParityReference(student, data, task), recipe.export, path)
    return path


def cli_run(model: Path) -> dict[int, dict]:
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-m", "edgekd", "profile", str(model), "--json"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return {p["device"]["threads_requested"]: p for p in json.loads(done.stdout)}


def api_run(model: Path, min_time: float) -> dict[int, dict]:
    from edgekd.profile import profile_files
    from edgekd.recipe.schema import ProfileConfig
    from edgekd.results import to_dict

    profiles = profile_files({model.name: model}, ProfileConfig(min_time_s=min_time))[model.name]
    return {p.device["threads_requested"]: to_dict(p) for p in profiles}


def spread(runs: list[dict[int, dict]]) -> dict[int, dict]:
    out = {}
    for threads in runs[0]:
        p50 = [r[threads]["latency_ms"]["p50"] for r in runs]
        p99 = [r[threads]["latency_ms"]["p99"] for r in runs]
        out[threads] = {
            "threads": runs[0][threads]["threads"],
            "p50": p50,
            "spread": (max(p50) - min(p50)) / statistics.median(p50),
            "p99_spread": (max(p99) - min(p99)) / statistics.median(p99),
            "runs": [r[threads]["runs"] for r in runs],
            "seconds": [r[threads]["device"]["measurement"]["measure_s"] for r in runs],
        }
    return out


def rows(label: str, result: dict[int, dict]) -> list[str]:
    lines = []
    for entry in result.values():
        verdict = "met" if entry["spread"] <= GOAL else "**missed**"
        p50 = ", ".join(f"{v:.3f}" for v in entry["p50"])
        lines.append(
            f"| {label} | {entry['threads']} | {p50} | **{100 * entry['spread']:.1f}%** ({verdict}) "
            f"| {100 * entry['p99_spread']:.0f}% | {min(entry['runs'])}–{max(entry['runs'])} "
            f"| {statistics.median(entry['seconds']):.2f} s |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model", type=Path, help="ONNX file to profile (default: the quickstart student)")
    parser.add_argument("--min-time", type=float, action="append", default=[], help="sweep value (seconds)")
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or quickstart_student(Path(tmp))
        load = os.getloadavg()[0]
        table = [
            "| protocol | threads | p50 of each run (ms) | p50 spread (goal ≤ 5%) | p99 spread | timed runs | "
            "measuring time |",
            "|---|---|---|---|---|---|---|",
        ]
        table += rows("`edgekd profile` defaults", spread([cli_run(model) for _ in range(args.runs)]))
        sweep: dict[float, list[dict[int, dict]]] = {value: [] for value in args.min_time}
        for _ in range(args.runs if sweep else 0):
            for value in sweep:
                sweep[value].append(api_run(model, value))
        for value, runs in sweep.items():
            table += rows(f"min_time_s={value:g}", spread(runs))
        load = max(load, os.getloadavg()[0])

    cmd = " ".join(["benchmarks/profile_repeatability.py", *sys.argv[1:]])
    print(f"Command: `.venv/bin/python {cmd}` (1-min load average ≤ {load:.2f} during the run)\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
