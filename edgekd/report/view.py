"""Turn a validated report.json dict into the formatted tables and sentences both human reports show.

Why a view layer: report.md and report.html must state the same numbers with the same rounding; doing the
selection and formatting once, in Python, keeps the two jinja2 templates to layout only and makes the content
testable without parsing markup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from edgekd.report import fmt
from edgekd.report.gates import PARITY_PREFIXES
from edgekd.report.snippet import deploy_snippet

CLASSES_SHOWN = 30  # the deploy table lists this many class names; the snippet and the file carry them all
PRIMARY_METRIC = {"classification": "accuracy", "segmentation": "miou", "regression": "mae"}
SOURCE_LABEL = {"onnxruntime": "ONNX Runtime", "pytorch": "PyTorch"}


@dataclass
class Table:
    """Rows of pre-formatted cells; ``numeric`` marks right-aligned columns."""

    headers: list[str]
    rows: list[list[str]]
    numeric: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.numeric = self.numeric or [False] + [True] * (len(self.headers) - 1)


def primary_metric(report: dict[str, Any]) -> str | None:
    """The task's headline metric, or the first metric the teacher reports when the task's is absent."""
    metrics = report["models"]["teacher"]["metrics"]
    name = PRIMARY_METRIC.get(report["task"])
    return name if name in metrics else next(iter(metrics), None)


def build_view(report: dict[str, Any]) -> dict[str, Any]:
    """Template context for report.md.j2 / report.html.j2 (plots are added by the caller)."""
    from edgekd.report.budget_view import budget_summary, precision_table  # these import Table from here
    from edgekd.report.compress_view import (
        distill_summary,
        history_table,
        layers_table,
        pruning_summary,
        with_data_free,
    )
    from edgekd.report.devices import devices_table, operators_table

    recipe = report.get("recipe", {})
    model_name = recipe.get("teacher", {}).get("model", {}).get("name", "teacher")
    title = (recipe.get("report") or {}).get("title") or f"edgekd report: {model_name}"
    slowest = _slowest_stage(report["stages"])
    return {
        "title": title,
        "meta": f"{report['task']} · edgekd {report['edgekd_version']} · {report['created']}",
        "headline": _headline(report),
        "overview": _overview(report),
        "artifacts": _artifacts(report),
        "latency": _latency(report),
        "speedup": _speedup(report),
        "devices": devices_table(report),
        "operators": operators_table(report),
        "pruning_summary": pruning_summary(report.get("pruning")),
        "budget_summary": budget_summary(report),
        "precision": precision_table(report),
        "layers": layers_table(report.get("pruning")),
        "distill_summary": with_data_free(distill_summary(report.get("distillation"), report), report),
        "history": history_table(report.get("distillation")),
        "stages": _stages(report["stages"]),
        "slowest": slowest,
        "gates": _gates(deploy_gates(report["gates"])),
        "gates_summary": _gates_summary(deploy_gates(report["gates"])),
        "parity": _gates(parity_checks(report["gates"])),
        "parity_summary": _parity_summary(parity_checks(report["gates"])),
        "deploy": _deploy(report),
        "environment": Table(
            ["Key", "Value"],
            [[k, "not installed" if v is None else str(v)] for k, v in report["environment"].items()],
            [False, False],
        ),
        "notes": list(report.get("notes") or []),
        "recipe_yaml": yaml.safe_dump(recipe, sort_keys=False, default_flow_style=False).rstrip(),
    }


def _artifact(report: dict[str, Any], role: str) -> dict[str, Any] | None:
    name = report["compression"].get(f"{role}_artifact") or f"{role}.onnx"
    return next((a for a in report["artifacts"] if name in (a["name"], a["path"])), None)


def _cores(report: dict[str, Any], profile: dict[str, Any]) -> int | None:
    cores = profile["device"].get("cores")
    if cores is None and profile["target"] == "local":
        cores = report["environment"].get("cores")
    return cores if isinstance(cores, int) else None


def _setting(report: dict[str, Any], p: dict[str, Any]) -> str:
    return fmt.setting(p["target"], p["threads"], p["batch"], _cores(report, p))


def _headline(report: dict[str, Any]) -> list[str]:
    models, comp = report["models"], report["compression"]
    t, s = models["teacher"], models["student"]
    lines = [
        f"MACs {fmt.signed(-comp['macs_reduction'] * 100)} % ({fmt.si(t['macs'])} → {fmt.si(s['macs'])}), "
        f"params {fmt.signed(-comp['params_reduction'] * 100)} % "
        f"({fmt.si(t['params'])} → {fmt.si(s['params'])})"
    ]
    compared = comp.get("metrics_compared") or {"teacher": t["metrics"], "student": s["metrics"]}
    sources = comp.get("metric_source", {})
    parts = []
    for name, delta in comp["metric_delta"].items():
        before, after = compared["teacher"].get(name), compared["student"].get(name)
        where = SOURCE_LABEL.get(sources.get(name, ""), "")
        parts.append(
            f"{name} {fmt.metric(name, before)} → {fmt.metric(name, after)} "
            f"({fmt.metric_delta(name, delta)}{', ' + where if where else ''})"
        )
    if parts:
        lines.append("; ".join(parts))
    student_name = comp.get("student_artifact")
    rows = [r for r in report.get("speedup") or [] if r["artifact"] == student_name]
    if rows:
        measured = ", ".join(
            f"{fmt.ratio(r['speedup'])} at {fmt.threads(r['threads'], _row_cores(report, r))}"
            + (f" (batch {r['batch']}, {r['target']})" if r["batch"] != 1 or r["target"] != "local" else "")
            for r in rows
        )
        lines.append(
            f"Measured speed-up of {student_name}: {measured}; MACs ratio {fmt.ratio(rows[0]['macs_ratio'])}"
        )
    parity = _parity_summary(parity_checks(report["gates"]))
    lines.append(" ".join(filter(None, (parity, _gates_summary(deploy_gates(report["gates"]))))))
    return lines


def _row_cores(report: dict[str, Any], row: dict[str, Any]) -> int | None:
    for artifact in report["artifacts"]:
        for p in artifact["profiles"]:
            if (p["target"], p["threads"], p["batch"]) == (row["target"], row["threads"], row["batch"]):
                return _cores(report, p)
    return None


def _overview(report: dict[str, Any]) -> Table:
    t, s = report["models"]["teacher"], report["models"]["student"]
    rows = [
        ["Parameters", fmt.count(t["params"]), fmt.count(s["params"]), _change(t["params"], s["params"])],
        ["MACs", fmt.si(t["macs"]), fmt.si(s["macs"]), _change(t["macs"], s["macs"])],
    ]
    ta, sa = _artifact(report, "teacher"), _artifact(report, "student")
    compared = (
        (t.get("val_metrics") or {}, s.get("val_metrics") or {}, "validation, PyTorch"),
        (t["metrics"], s["metrics"], "test, PyTorch"),
        ((ta or {}).get("metrics", {}), (sa or {}).get("metrics", {}), "ONNX Runtime"),
    )
    for t_m, s_m, label in compared:
        for name in dict.fromkeys([*t_m, *s_m]):
            tv, sv = t_m.get(name), s_m.get(name)
            delta = sv - tv if tv is not None and sv is not None else None
            rows.append(
                [
                    f"{name} ({label})",
                    fmt.metric(name, tv),
                    fmt.metric(name, sv),
                    fmt.metric_delta(name, delta),
                ]
            )
    if ta or sa:
        t_size, s_size = (ta or {}).get("size_bytes"), (sa or {}).get("size_bytes")
        rows.append(["ONNX file size", fmt.size(t_size), fmt.size(s_size), _change(t_size, s_size)])
    t_prof = {(p["target"], p["threads"], p["batch"]): p for p in (ta or {}).get("profiles", [])}
    for p in (sa or {}).get("profiles", []):
        tp = t_prof.get((p["target"], p["threads"], p["batch"]))
        label = _setting(report, p)
        for q in ("p50", "p90"):
            t_ms = tp["latency_ms"][q] if tp else None
            s_ms = p["latency_ms"][q]
            speed = f"{fmt.ratio(t_ms / s_ms)} speed-up" if t_ms and s_ms else "–"
            rows.append([f"Latency {q} ({label})", fmt.ms(t_ms), fmt.ms(s_ms), speed])
    return Table(["", "Teacher", "Student", "Change"], rows)


def _change(before: float | None, after: float | None) -> str:
    if not before or after is None:
        return "–"
    return fmt.signed((after / before - 1) * 100, 1, " %")


def _artifacts(report: dict[str, Any]) -> Table:
    metric_names = list(dict.fromkeys(n for a in report["artifacts"] for n in a["metrics"]))
    headers = ["Artifact", "Format", "Precision", "Size", "SHA-256", "Max abs diff", "Agreement", "Parity"]
    rows = []
    for a in report["artifacts"]:
        parity = a["parity"]
        rows.append(
            [
                a["name"],
                a["format"],
                a["precision"],
                fmt.size(a["size_bytes"]),
                fmt.short_sha(a["sha256"]),
                f"{parity['max_abs_diff']:.2e}" if parity else "–",
                fmt.pct(parity["agreement"], 2) if parity else "–",
                fmt.passed(parity["passed"]) if parity else "–",
                *[fmt.metric(n, a["metrics"].get(n)) for n in metric_names],
            ]
        )
    numeric = [False, False, False, True, False, True, True, False] + [True] * len(metric_names)
    return Table(headers + [f"{n} (ORT)" for n in metric_names], rows, numeric)


def _latency(report: dict[str, Any]) -> Table:
    headers = [
        "Artifact",
        "Setting",
        "p50",
        "p90",
        "p99",
        "mean ± std",
        "first run",
        "load",
        "peak RSS",
        "runs",
    ]
    rows = []
    for a in report["artifacts"]:
        for p in a["profiles"]:
            lat = p["latency_ms"]
            rows.append(
                [
                    a["name"],
                    _setting(report, p),
                    fmt.ms(lat["p50"]),
                    fmt.ms(lat["p90"]),
                    fmt.ms(lat["p99"]),
                    f"{lat['mean']:.2f} ± {lat['std']:.2f} ms",
                    fmt.ms(lat["first"]),
                    fmt.ms(p["load_ms"]),
                    f"{p['peak_rss_mb']:.1f} MiB",
                    str(p["runs"]),
                ]
            )
    return Table(headers, rows, [False, False] + [True] * 8)


def _speedup(report: dict[str, Any]) -> Table:
    headers = ["Artifact", "Setting", "Teacher p50", "p50", "Speed-up", "MACs ratio", "Realized"]
    rows = [
        [
            r["artifact"],
            fmt.setting(r["target"], r["threads"], r["batch"], _row_cores(report, r)),
            fmt.ms(r["teacher_p50_ms"]),
            fmt.ms(r["student_p50_ms"]),
            fmt.ratio(r["speedup"]),
            fmt.ratio(r["macs_ratio"]),
            fmt.pct(r["realized"], 0),
        ]
        for r in report.get("speedup") or []
    ]
    return Table(headers, rows, [False, False] + [True] * 5)


def _slowest_stage(stages: dict[str, Any]) -> str | None:
    if not stages:
        return None
    total = sum(s["seconds"] for s in stages.values())
    name, entry = max(stages.items(), key=lambda kv: kv[1]["seconds"])
    share = f", {entry['seconds'] / total * 100:.0f} % of {fmt.seconds(total)} total" if total else ""
    return f"Slowest stage: {name} ({fmt.seconds(entry['seconds'])}{share})"


def _stages(stages: dict[str, Any]) -> Table:
    total = sum(s["seconds"] for s in stages.values())
    rows = []
    for name, entry in stages.items():
        details = ", ".join(
            f"{k}={v}" for k, v in entry.items() if k != "seconds" and isinstance(v, str | int | float | bool)
        )
        share = fmt.pct(entry["seconds"] / total, 0) if total else "–"
        rows.append([name, fmt.seconds(entry["seconds"]), share, details or "–"])
    if rows:
        rows.append(["total", fmt.seconds(total), fmt.pct(1.0, 0) if total else "–", ""])
    return Table(["Stage", "Time", "Share", "Details"], rows, [False, True, True, False])


def _gates(gates: list[dict[str, Any]]) -> Table:
    rows = [[g["name"], f"{g['value']:.4g}", f"{g['limit']:.4g}", fmt.passed(g["passed"])] for g in gates]
    return Table(["Gate", "Value", "Limit", "Result"], rows, [False, True, True, False])


def parity_checks(gates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The automatic parity checks among ``gates[]`` (kind ``parity``; by name in reports without kinds)."""
    return [g for g in gates if _kind(g) == "parity"]


def deploy_gates(gates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The release criteria the recipe's ``gates:`` set, without the automatic parity checks."""
    return [g for g in gates if _kind(g) != "parity"]


def _kind(gate: dict[str, Any]) -> str:
    return gate.get("kind") or ("parity" if gate["name"].startswith(PARITY_PREFIXES) else "gate")


def _parity_summary(parity: list[dict[str, Any]]) -> str | None:
    """Why apart from the gates: these run on every export whatever the recipe says; counting them as deploy
    gates told users "all deploy gates passed" when they had set none."""
    if not parity:
        return None
    failed = [g["name"] for g in parity if not g["passed"]]
    if not failed:
        return f"Parity checks passed ({len(parity)} of {len(parity)})."
    return f"{len(failed)} of {len(parity)} parity checks FAILED: {', '.join(failed)}."


def _gates_summary(gates: list[dict[str, Any]]) -> str:
    if not gates:
        return "No deploy gates were configured."
    failed = [g["name"] for g in gates if not g["passed"]]
    if not failed:
        return f"All deploy gates passed ({len(gates)} of {len(gates)})."
    return f"{len(failed)} of {len(gates)} deploy gates FAILED: {', '.join(failed)}."


def _deploy(report: dict[str, Any]) -> dict[str, Any] | None:
    """The "Input and deployment" section: how to call the shipped file, and a snippet that does."""
    block = report.get("input")
    if not block:
        return None
    pre = block["preprocessing"]
    rows = [
        ["File", block.get("artifact", "student.onnx")],
        ["Input name", block["name"]],
        ["Shape", " × ".join(str(d) for d in block["shape"])],
        ["Element type", block["dtype"]],
        ["Layout", block["layout"]],
        ["Preprocessing", f"{pre['formula']}, per channel"],
        ["mean", ", ".join(f"{v:g}" for v in pre["mean"])],
        ["std", ", ".join(f"{v:g}" for v in pre["std"])],
        ["Preset", pre["preset"] or "— (not a named preset)"],
    ]
    if pre.get("source"):  # where mean/std came from (data.preprocessing); older reports do not say
        origin = f"{pre['source']}: {pre['detail']}" if pre.get("detail") else pre["source"]
        rows.append(["Normalisation from", origin])
    if block.get("outputs") is not None:
        rows += [
            [f"Output {i}: {name}", meaning] for i, (name, meaning) in enumerate(block["outputs"].items())
        ]
    else:
        classes = block.get("classes") or []
        rows.append([f"Classes ({len(classes)})", _classes_cell(classes)])
    return {
        "table": Table(["", "Value"], rows, [False, False]),
        "snippet": deploy_snippet(block, report["task"]).rstrip(),
        "file": block.get("artifact", "student.onnx"),
    }


def _classes_cell(classes: list[str]) -> str:
    """``0 T-shirt/top, 1 Trouser, …``: index = output channel; a long list is cut (the file has them all)."""
    if not classes:
        return "–"
    shown = ", ".join(f"{i} {name}" for i, name in enumerate(classes[:CLASSES_SHOWN]))
    if len(classes) <= CLASSES_SHOWN:
        return shown
    return f"{shown}, … ({len(classes)} in all; the file's class_names metadata)"


def headline(report: dict[str, Any]) -> str:
    """The report's headline as plain text lines (what ``edgekd compress`` prints when it finishes)."""
    return "\n".join(_headline(report))
