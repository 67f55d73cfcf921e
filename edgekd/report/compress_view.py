"""Report text about how the student was made: the pruning and the distillation sections.

Split from :mod:`edgekd.report.view` (which builds the template context from these): each function turns one
report.json block into the sentence or table both human reports show.
"""

from __future__ import annotations

from typing import Any

from edgekd.report import fmt
from edgekd.report.view import Table, primary_metric


def pruning_summary(pruning: dict[str, Any] | None) -> str | None:
    if not pruning:
        return None
    goal = f"{pruning['reduction_goal'] * 100:.0f} % of {pruning['target']}"
    achieved = (
        f"MACs {fmt.signed(-pruning['macs_reduction'] * 100)} %, "
        f"params {fmt.signed(-pruning['params_reduction'] * 100)} %"
    )
    rounding = f"; widths rounded to multiples of {pruning['round_to']}" if pruning.get("round_to") else ""
    how = "per-group widths by importance per cost saved" if pruning.get("allocation") == "cost" else ""
    steps = how or f"in {pruning['steps']} steps"
    budget = pruning.get("latency")
    if budget:  # prune.target: latency
        achieved += (
            f"; latency budget {budget['budget_ms']:.3g} ms on {budget['target']} ({budget['threads']} "
            f"thread(s)), predicted {budget['predicted_ms']:.3g} ms"
        )
    return (
        f"Importance {pruning['importance']}, goal: remove {goal}, {steps} "
        f"({fmt.seconds(pruning.get('seconds'))}){rounding}. Achieved: {achieved}."
    )


def layers_table(pruning: dict[str, Any] | None) -> Table | None:
    if not pruning or not pruning.get("layers"):
        return None
    rows = [
        [
            layer["name"],
            layer["kind"],
            str(layer["before"]),
            str(layer["after"]),
            fmt.pct(layer["after"] / layer["before"] if layer["before"] else 1.0, 0),
        ]
        for layer in pruning["layers"]
    ]
    return Table(["Layer", "Kind", "Before", "After", "Kept"], rows, [False, False, True, True, True])


def distill_summary(distill: dict[str, Any] | None, report: dict[str, Any]) -> str | None:
    if not distill:
        return None
    name = primary_metric(report)
    best = distill["metrics"].get(name) if name else None
    if best is None:  # no validation split: nothing was selected
        return (
            f"{distill['epochs']} epochs in {fmt.seconds(distill.get('seconds'))}; "
            f"kept the last epoch ({distill['best_epoch']}): no validation split to select on."
        )
    return (
        f"{distill['epochs']} epochs in {fmt.seconds(distill.get('seconds'))}; kept the weights of epoch "
        f"{distill['best_epoch']}, selected on the validation split ({name} {fmt.metric(name, best)} in "
        "PyTorch); the test split was not looked at until the end."
    )


def with_data_free(summary: str | None, report: dict[str, Any]) -> str | None:
    """The distillation summary, led by what replaced the training images when none were used."""
    free = report["stages"].get("distill", {}).get("data_free")
    if not free:
        return summary
    lead = (
        f"No training images used: {free['method']} synthesised {free['synthetic_samples']} samples in "
        f"{fmt.seconds(free['seconds'])} (the eval split is real)."
    )
    return f"{lead} {summary}" if summary else lead


def history_table(distill: dict[str, Any] | None) -> Table | None:
    if not distill or not distill.get("history"):
        return None
    history = distill["history"]
    terms = list(dict.fromkeys(t for e in history for t in e.get("loss_terms", {})))
    metrics = list(dict.fromkeys(m for e in history for m in e.get("metrics", {})))
    rows = []
    for e in history:
        epoch = f"{e['epoch']} (best)" if e["epoch"] == distill.get("best_epoch") else str(e["epoch"])
        rows.append(
            [
                epoch,
                f"{e['train_loss']:.4f}",
                *[f"{e['loss_terms'][t]:.4f}" if t in e.get("loss_terms", {}) else "–" for t in terms],
                *[fmt.metric(m, e.get("metrics", {}).get(m)) for m in metrics],
                f"{e['lr']:.3g}",
                fmt.seconds(e["seconds"]),
            ]
        )
    headers = [
        "Epoch",
        "Train loss",
        *[f"loss: {t}" for t in terms],
        *[f"val {m}" for m in metrics],
        "LR",
        "Time",
    ]
    return Table(headers, rows)
