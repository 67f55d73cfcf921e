"""The quickstart pruned for latency vs for MACs, at equal measured p50, after the same distillation (issue 14).

For each seed:

1. the MACs arm: ``edgekd compress recipes/quickstart.yaml`` as shipped (-75% MACs, uniform channel ratio)
   with ``--epochs`` of distillation; its student's measured p50 (local CPU, 1 thread) is read from its report;
2. the latency arm: the same recipe and budget with ``prune: {target: latency, reduction: 1 - f, latency:
   {target: local, threads: 1}}``, ``f`` the MACs student's p50 over the teacher's, both timed in one
   interleaved probe run (the latency model from ``--cache``, calibrated when missing);
3. both students (and the teacher) timed again side by side in one probe run (``--rounds`` interleaved passes,
   lowest p50 kept), so the two arms' latency is compared in one measurement, not across runs.

Reported per arm: test accuracy of the shipped ``student.onnx`` in ONNX Runtime (mean ± std over seeds; epochs
selected on the validation split), MACs cut, params, and the side-by-side p50. The issue's goal: at equal p50
the latency arm is >= the MACs arm + 0.3 pt, or at equal accuracy >= 1.25x its speed-up.

    .venv/bin/python benchmarks/latency_quickstart.py --cache runs/latency-cache-quiet --out runs/bench/lq
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from benchmarks._compress import artifact, compress_report  # noqa: E402

QUICKSTART = REPO / "recipes" / "quickstart.yaml"


def compress(out: Path, sets: list[str]) -> dict:
    report = compress_report(QUICKSTART, out, sets)
    student = artifact(report, "student.onnx")
    p50 = next(p for p in student["profiles"] if p["target"] == "local" and p["threads"] == 1)
    return {
        "accuracy": student["metrics"]["accuracy"],
        "p50_ms_own_run": p50["latency_ms"]["p50"],
        "macs_reduction": report["compression"]["macs_reduction"],
        "params_after": report["models"]["student"]["params"],
        "importance_kept": report["stages"]["prune"].get("importance_kept"),
        "onnx": str(out / "student.onnx"),
        "teacher_onnx": str(out / "teacher.onnx"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=2, help="distillation epochs of both arms")
    parser.add_argument("--cache", default=str(REPO / "runs" / "latency-cache"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "latency_quickstart")
    args = parser.parse_args()
    common = [f"distill.epochs={args.epochs}", "profile.threads=[1]", "profile.time_budget_s=1.0"]
    common += [f"profile.latency_cache={args.cache}"]
    rows = []
    for seed in args.seeds:
        macs = compress(args.out / f"macs-seed{seed}", [f"seed={seed}", *common])
        fraction = measured_fraction(macs, args.rounds)
        latency_spec = json.dumps({"target": "local", "threads": 1})
        sets = [f"seed={seed}", *common, "prune.target=latency", f"prune.reduction={1 - fraction:.4f}"]
        latency = compress(args.out / f"latency-seed{seed}", [*sets, f"prune.latency={latency_spec}"])
        rows.append({"seed": seed, "fraction_of_teacher": fraction, "macs": macs, "latency": latency})
        print(json.dumps(rows[-1]), flush=True)
    side_by_side(rows, args.rounds)
    (args.out / "rows.json").write_text(json.dumps(rows, indent=1))
    print(summarise(rows))


def measured_fraction(macs: dict, rounds: int) -> float:
    """The MACs student's p50 as a fraction of the teacher's, both timed in one interleaved probe run: the
    latency arm's budget. A ratio from one run holds when the machine is shared; two absolute p50s do not."""
    import onnx

    from edgekd.latency.calibrate import _run_bundle
    from edgekd.profile.target import ProbeSettings

    models = {"teacher.onnx": onnx.load(macs["teacher_onnx"]), "student.onnx": onnx.load(macs["onnx"])}
    settings = ProbeSettings(threads=1, warmup=5, time_budget_s=1.5, min_runs=20, bundle=True, rounds=rounds)
    measured = _run_bundle("local", models, settings)
    return measured["student.onnx"] / measured["teacher.onnx"]


def side_by_side(rows: list[dict], rounds: int) -> None:
    """Every student and the teacher in one probe run: ``p50_ms`` per arm, comparable across arms."""
    import onnx

    from edgekd.latency.calibrate import _run_bundle
    from edgekd.profile.target import ProbeSettings

    models = {"teacher.onnx": onnx.load(rows[0]["macs"]["teacher_onnx"])}
    for row in rows:
        for arm in ("macs", "latency"):
            models[f"{arm}{row['seed']}.onnx"] = onnx.load(row[arm]["onnx"])
    settings = ProbeSettings(threads=1, warmup=5, time_budget_s=1.5, min_runs=20, bundle=True, rounds=rounds)
    measured = _run_bundle("local", models, settings)
    for row in rows:
        row["teacher_ms"] = measured["teacher.onnx"]
        for arm in ("macs", "latency"):
            row[arm]["p50_ms"] = measured[f"{arm}{row['seed']}.onnx"]


def summarise(rows: list[dict]) -> str:
    def cell(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
        spread = f" ± {scale * statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
        return f"{scale * statistics.fmean(values):.{digits}f}{spread}"

    lines = [
        f"| arm (n={len(rows)}) | test accuracy % (ORT) | p50 ms side by side | speed-up over teacher | MACs cut "
        "| params |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for arm in ("macs", "latency"):
        acc = [r[arm]["accuracy"] for r in rows]
        p50 = [r[arm]["p50_ms"] for r in rows]
        speed = [r["teacher_ms"] / r[arm]["p50_ms"] for r in rows]
        cut = [r[arm]["macs_reduction"] for r in rows]
        params = [r[arm]["params_after"] for r in rows]
        lines.append(
            f"| {arm} | {cell(acc, 100)} | {cell(p50, 1, 3)} | {cell(speed, 1)}× | {cell(cut, 100, 1)}% | "
            f"{statistics.fmean(params):.0f} |"
        )
    diff = [r["latency"]["accuracy"] - r["macs"]["accuracy"] for r in rows]
    lines.append(f"\nlatency − MACs accuracy per seed (pt): {', '.join(f'{100 * d:+.2f}' for d in diff)}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
