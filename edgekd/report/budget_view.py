"""Report text about latency decisions: the budget a student was pruned to, and which precision to ship.

Both answer "what runs fastest on my device without losing accuracy" with measurements (issue 14): the latency
budget check compares the shipped student's measured p50 with the budget it was pruned for (and says when
``prune.latency.refine`` pruned again), the precision table names, per profiled setting, the fastest student
file within ``export.precision_tolerance`` of the FP32 student's metric.
"""

from __future__ import annotations

from typing import Any

from edgekd.report import fmt
from edgekd.report.view import Table


def budget_summary(report: dict[str, Any]) -> str | None:
    """One sentence on the latency budget: measured against budget, met or not, and any refinement."""
    check = (report["stages"].get("profile") or {}).get("latency_budget")
    if not check:
        return None
    verdict = "met" if check["met"] else "missed"
    text = (
        f"Latency budget {fmt.ms(check['budget_ms'])} on {check['target']} ({fmt.threads(check['threads'])}): "
        f"the student measured {fmt.ms(check['measured_ms'])}, {verdict} "
        f"(allowed error {fmt.pct(check['allowed_error'], 0)}: the latency model's held-out MAPE, 10 % without one)."
    )
    refine = report["stages"].get("refine")
    if refine and refine.get("missed"):
        first = refine["missed"][0]
        text += (
            f" The first student measured {fmt.ms(first['measured_ms'])}; the latency model was corrected with "
            "that measurement and "
        )
        kept = refine.get("kept_first")
        text += f"the first student was kept ({kept})." if kept else "the student above was pruned again."
    elif check.get("model_updated"):
        text += " The latency model was corrected with this measurement (prune.latency.refine re-prunes)."
    return text


def precision_table(report: dict[str, Any]) -> Table | None:
    """Per setting: the recommended file, its p50 and speed-up over FP32, and why the others were not."""
    rows = []
    for entry in report.get("precision") or []:
        others = [
            f"{c['artifact']} {fmt.ms(c['p50_ms'])}" + (f" ({c['reason']})" if c.get("reason") else "")
            for c in entry["candidates"]
            if c["artifact"] != entry["artifact"]
        ]
        rows.append(
            [
                fmt.setting(entry["target"], entry["threads"], entry["batch"]),
                entry["artifact"],
                fmt.ms(entry["p50_ms"]),
                fmt.ratio(entry.get("speedup_over_fp32")),
                "; ".join(others) or "–",
            ]
        )
    if not rows:
        return None
    headers = ["Setting", "Recommended", "p50", "vs FP32", "Others"]
    return Table(headers, rows, [False, False, True, True, False])
