"""The report's PNG plots, drawn from report.json alone (so ``edgekd report`` can redraw them later).

Why ``Figure`` objects instead of ``pyplot``: pyplot keeps global state and leaks figures across calls; a
``Figure`` is freed with its last reference and never needs a display. The Agg backend is selected anyway, so
importing this module on a headless edge box or CI runner never tries to open a window.

Each plot is skipped (not drawn empty) when its data is absent: no profiles, no pruning, no history.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402  (after selecting the backend)

from edgekd.io import atomic_path  # noqa: E402
from edgekd.report import fmt  # noqa: E402
from edgekd.report.samples import (  # noqa: E402
    SEGMENTATION_PLOT,
    SEGMENTATION_TITLE,
    SYNTHETIC_PLOT,
    SYNTHETIC_TITLE,
)
from edgekd.report.schema import FRACTION_METRICS  # noqa: E402
from edgekd.report.view import primary_metric  # noqa: E402

PLOT_FILES = (
    "latency.png",
    "channels.png",
    "group_norms.png",
    "distillation.png",
    "metric_vs_latency.png",
    "operators.png",
)
_DPI = 110
_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")


def draw_plots(report: dict[str, Any], plots_dir: Path) -> list[tuple[str, Path]]:
    """Draw every plot whose data exists into ``plots_dir``; return ``[(title, path)]`` in display order.

    Plots this module owns but could not draw this time are deleted, so a re-render never shows a stale one.
    """
    plotters: list[tuple[str, str, Callable[[dict[str, Any]], Figure | None]]] = [
        ("latency.png", "Latency p50 per artifact (whiskers: p90)", _latency),
        ("channels.png", "Channels per layer before and after pruning", _channels),
        ("group_norms.png", "Channel-group norms before and after sparse training", _group_norms),
        ("distillation.png", "Distillation: metric and loss per epoch", _distillation),
        ("metric_vs_latency.png", "Metric vs latency of each artifact", _metric_vs_latency),
        ("operators.png", "Share of kernel time per operator type", _operators),
    ]
    written = []
    for filename, title, plot in plotters:
        path = plots_dir / filename
        fig = plot(report)
        if fig is None:
            path.unlink(missing_ok=True)
            continue
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=_DPI, bbox_inches="tight", metadata={"Software": None})
        written.append((title, path))
    strip = plots_dir / SEGMENTATION_PLOT  # drawn by the pipeline, which has the images and models
    if strip.is_file():
        written.append((SEGMENTATION_TITLE, strip))
    samples = plots_dir / SYNTHETIC_PLOT  # drawn by a data-free distill stage, which had the samples
    if samples.is_file():
        written.append((SYNTHETIC_TITLE, samples))
    return written


def _settings(report: dict[str, Any]) -> list[tuple[str, int, int]]:
    keys = {(p["target"], p["threads"], p["batch"]) for a in report["artifacts"] for p in a["profiles"]}
    # 1 thread, 2 threads, ..., then "all cores" (0) last: reads as increasing parallelism
    return sorted(keys, key=lambda k: (k[0], k[2], k[1] == 0, k[1]))


def _label(report: dict[str, Any], key: tuple[str, int, int]) -> str:
    target, threads, batch = key
    cores = report["environment"].get("cores") if target == "local" else None
    return fmt.setting(target, threads, batch, cores).replace(", ", "\n")


def _latency(report: dict[str, Any]) -> Figure | None:
    artifacts = [a for a in report["artifacts"] if a["profiles"]]
    settings = _settings(report)
    if not artifacts:
        return None
    fig = Figure(figsize=(min(14.0, max(6.0, 2.0 + len(settings) * (0.5 + 0.45 * len(artifacts)))), 4.0))
    ax = fig.add_subplot()
    width = 0.8 / len(artifacts)
    for i, artifact in enumerate(artifacts):
        by_key = {(p["target"], p["threads"], p["batch"]): p["latency_ms"] for p in artifact["profiles"]}
        xs, p50, up = [], [], []
        for j, key in enumerate(settings):
            if key in by_key:
                xs.append(j - 0.4 + width * (i + 0.5))
                p50.append(by_key[key]["p50"])
                up.append(by_key[key]["p90"] - by_key[key]["p50"])
        bars = ax.bar(xs, p50, width * 0.92, color=_COLORS[i % len(_COLORS)], label=artifact["name"])
        ax.errorbar(xs, p50, yerr=[[0] * len(up), up], fmt="none", ecolor="#333333", capsize=3, lw=1)
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in p50], label_type="center", color="white", fontsize=7)
    ax.set_xticks(range(len(settings)), [_label(report, k) for k in settings], fontsize=8)
    ax.set_ylabel("latency p50 (ms)")
    ax.margins(y=0.15)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, frameon=False)
    _despine(ax)
    return fig


def _channels(report: dict[str, Any]) -> Figure | None:
    layers = (report.get("pruning") or {}).get("layers") or []
    if not layers:
        return None
    n = len(layers)
    fig = Figure(figsize=(min(max(6.0, 0.32 * n + 1.5), 24.0), 4.2))
    ax = fig.add_subplot()
    xs = range(n)
    ax.bar(xs, [layer["before"] for layer in layers], 0.8, color="#c8d3e6", label="before")
    ax.bar(xs, [layer["after"] for layer in layers], 0.8, color=_COLORS[0], label="after")
    ax.set_xticks(list(xs), [layer["name"] for layer in layers], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("output channels")
    ax.set_xlim(-0.6, n - 0.4)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, frameon=False)
    _despine(ax)
    return fig


def _group_norms(report: dict[str, Any]) -> Figure | None:
    """Histogram of every channel group's L2 norm before and after ``prune.sparsity`` (DepGraph's Fig. 4 view):
    sparse training worked when a mass of groups moved towards zero, apart from the rest."""
    sparsify = (report.get("stages") or {}).get("sparsify") or {}
    before, after = sparsify.get("group_norms_before"), sparsify.get("group_norms_after")
    if not before or not after:
        return None
    fig = Figure(figsize=(6.5, 3.6))
    ax = fig.add_subplot()
    top = max(max(before), max(after))
    bins = [top * i / 40 for i in range(41)]
    ax.hist(before, bins=bins, color="#c8d3e6", label=f"before ({len(before)} groups)")
    reg = sparsify.get("reg")
    strength = f", reg {reg:.2g}{' (auto)' if sparsify.get('reg_auto') else ''}" if reg is not None else ""
    if sparsify.get("target") == "pruned":
        strength += f", on the {100 * sparsify.get('penalised_groups', 0):.0f}% the cut removes"
    ax.hist(
        after,
        bins=bins,
        color=_COLORS[0],
        alpha=0.75,
        label=f"after {sparsify.get('epochs')} epoch(s){strength}",
    )
    if sparsify.get("target") != "pruned":  # a planned cut shrinks half the groups: the median falls between
        ax.axvline(
            0.1 * statistics.median(after), color=_COLORS[3], ls="--", lw=1, label="10% of the median (after)"
        )
    ax.set_xlabel("channel-group L2 norm (relative: torch-pruning normalises each coupled group by its mean)")
    ax.set_ylabel("groups")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, frameon=False)
    _despine(ax)
    return fig


def _distillation(report: dict[str, Any]) -> Figure | None:
    history = (report.get("distillation") or {}).get("history") or []
    name = primary_metric(report)
    epochs = [e["epoch"] for e in history if name in e.get("metrics", {})]
    if not epochs or name is None:
        return None
    values = [e["metrics"][name] for e in history if name in e.get("metrics", {})]
    scale = 100.0 if name in FRACTION_METRICS else 1.0
    unit = f"{name} (%)" if scale == 100.0 else name
    fig = Figure(figsize=(6.5, 3.8))
    ax = fig.add_subplot()
    ax.plot(
        epochs, [v * scale for v in values], "o-", color=_COLORS[0], label=f"student val {name} (PyTorch)"
    )
    teacher = (report["models"]["teacher"].get("val_metrics") or {}).get(name)  # the same split as the curve
    if teacher is not None:
        ax.axhline(teacher * scale, color=_COLORS[3], ls="--", lw=1, label=f"teacher val {name} (PyTorch)")
    ax.set_xlabel("epoch")
    ax.set_ylabel(unit)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    loss = ax.twinx()
    loss.plot([e["epoch"] for e in history], [e["train_loss"] for e in history], "s:", color="#888888", ms=4)
    loss.set_ylabel("train loss", color="#666666")
    loss.tick_params(axis="y", colors="#666666")
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(
        handles + loss.get_lines(),
        labels + ["train loss"],
        fontsize=8,
        frameon=False,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.16),
        ncol=3,
    )
    return fig


def _metric_vs_latency(report: dict[str, Any]) -> Figure | None:
    name = primary_metric(report)
    points = [
        (a["name"], key, p["latency_ms"]["p50"], a["metrics"][name])
        for a in report["artifacts"]
        if name in a["metrics"]
        for p in a["profiles"]
        for key in [(p["target"], p["threads"], p["batch"])]
    ]
    if not points or name is None:
        return None
    scale = 100.0 if name in FRACTION_METRICS else 1.0
    settings = [k for k in _settings(report) if any(pt[1] == k for pt in points)]
    markers = "osD^vP*X"
    names = list(dict.fromkeys(pt[0] for pt in points))
    fig = Figure(figsize=(6.5, 4.0))
    ax = fig.add_subplot()
    for i, artifact in enumerate(names):
        mine = sorted((pt for pt in points if pt[0] == artifact), key=lambda pt: pt[2])
        color = _COLORS[i % len(_COLORS)]
        # one artifact's points differ only in latency (same file, same ORT metric): join them, label once
        ax.plot([pt[2] for pt in mine], [pt[3] * scale for pt in mine], "-", color=color, lw=1, alpha=0.5)
        for _, key, latency, value in mine:
            marker = markers[settings.index(key) % len(markers)]
            ax.scatter(latency, value * scale, s=55, color=color, marker=marker, zorder=3)
        last = mine[-1]
        ax.annotate(
            artifact,
            (last[2], last[3] * scale),
            xytext=(7, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
            color=color,
        )
    for i, key in enumerate(settings):  # legend of markers = settings
        ax.scatter(
            [],
            [],
            color="#555555",
            marker=markers[i % len(markers)],
            label=_label(report, key).replace("\n", ", "),
        )
    ax.set_xlabel("latency p50 (ms)")
    ax.set_ylabel(f"{name} in ONNX Runtime" + (" (%)" if scale == 100.0 else ""))
    ax.margins(x=0.25, y=0.25)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="best")
    _despine(ax)
    return fig


def _operators(report: dict[str, Any], top: int = 6) -> Figure | None:
    """Stacked share of kernel time by operator type, one bar per artifact (its first profiled setting)."""
    shares: dict[str, dict[str, float]] = {}
    for a in report["artifacts"]:
        for p in a["profiles"]:
            by_type = (p["device"].get("op_profile") or {}).get("by_op_type")
            if by_type:
                shares[a["name"]] = {row["op_type"]: row["share"] for row in by_type}
                break
    if not shares:
        return None
    totals: dict[str, float] = {}
    for per_type in shares.values():
        for op, share in per_type.items():
            totals[op] = totals.get(op, 0.0) + share
    ops = sorted(totals, key=lambda op: -totals[op])[:top]
    fig = Figure(figsize=(7, 0.6 + 0.5 * len(shares)))
    ax = fig.subplots()
    names = list(shares)
    left = [0.0] * len(names)
    for i, op in enumerate([*ops, "other"]):
        widths = [
            shares[n].get(op, 0.0) if op != "other" else max(0.0, 1 - sum(shares[n].get(o, 0.0) for o in ops))
            for n in names
        ]
        ax.barh(
            names,
            widths,
            left=left,
            label=op,
            color=_COLORS[i % len(_COLORS)] if op != "other" else "#cccccc",
        )
        left = [lft + w for lft, w in zip(left, widths, strict=True)]
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of kernel time")
    ax.invert_yaxis()
    ax.legend(
        ncol=min(4, len(ops) + 1),
        fontsize=8,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.35 - 0.1 / len(names)),
    )
    _despine(ax)
    return fig


def _despine(ax: Any) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
