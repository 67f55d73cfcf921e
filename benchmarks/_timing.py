"""Side-by-side latency of several ONNX files, for the issue-6 benchmarks (int8.py, realisation.py).

Why interleaved rounds: the machine is shared, so load from other processes comes and goes. Timing file A
for a minute and then file B would charge a burst of load to one of them; round-robin over the files, a few
rounds, and the median of each file's p50 spreads the load evenly. Every measurement is the real probe in a
fresh process (``edgekd.profile.local``), exactly what ``edgekd profile`` runs.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

from edgekd.profile import ProbeSettings
from edgekd.profile.local import LocalTarget


def load() -> str:
    """The 1/5/15-minute load averages and the core count, for the RESULTS.md line."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} / {five:.2f} / {fifteen:.2f} on {os.cpu_count()} cores"


def median_p50(
    files: dict[str, Path], threads: list[int], rounds: int, budget_s: float = 2.0, batch: int = 1
) -> dict[tuple[str, int], dict[str, float]]:
    """``{(label, threads): {"p50": median p50 over rounds (ms), "spread": (max-min)/median, "threads": n}}``."""
    target = LocalTarget()
    samples: dict[tuple[str, int], list[float]] = {(k, t): [] for k in files for t in threads}
    used: dict[tuple[str, int], int] = {}
    for _ in range(rounds):
        for t in threads:
            for label, path in files.items():
                settings = ProbeSettings(threads=t, batch=batch, warmup=10, time_budget_s=budget_s)
                answer = target.run_probe(Path(path).resolve(), settings)
                samples[(label, t)].append(answer["latency_ms"]["p50"])
                used[(label, t)] = answer["intra_op_threads"]
    out = {}
    for key, values in samples.items():
        med = statistics.median(values)
        out[key] = {"p50": med, "spread": (max(values) - min(values)) / med, "threads": used[key]}
    return out
