"""Report tables about where the artifacts were measured: device state and the slowest operators.

Why these belong in a shipped report: a latency figure without the device's clock, governor, temperature and
throttle state cannot be compared with tomorrow's (a Raspberry Pi that throttles at 80 °C halves its clock),
and "MACs dropped but latency didn't" is answered by which operators dominate the time, not by totals.
"""

from __future__ import annotations

from typing import Any

from edgekd.report import fmt
from edgekd.report.view import Table

TOP_OPERATORS = 5


def _value(value: Any, unit: str = "") -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return f"{value:.0f}{unit}" if value >= 100 else f"{value:.1f}{unit}"
    return f"{value}{unit}"


def _throttled(value: Any) -> str:
    if not value:
        return "–"
    if isinstance(value, dict):
        flags = [k for k, v in value.items() if v is True]
        return ", ".join(flags) if flags else "none"
    return str(value)


def devices_table(report: dict[str, Any]) -> Table:
    """One row per target: CPU, cores, governor, clock and temperature before → after timing, throttling."""
    headers = ["Target", "CPU / board", "Cores", "Governor", "Clock MHz", "Temp °C", "Throttled", "ORT"]
    seen: dict[str, list[str]] = {}
    for artifact in report["artifacts"]:
        for p in artifact["profiles"]:
            if p["target"] in seen:
                continue
            dev = p["device"]
            after = dev.get("after") or {}
            clock = _value(dev.get("freq_cur_mhz"))
            if dev.get("freq_max_mhz"):
                clock += f" / max {_value(dev['freq_max_mhz'])}"
            temp = _value(dev.get("temperature_c"))
            if after.get("temperature_c") is not None:
                temp += f" → {_value(after['temperature_c'])}"
            ort = dev.get("onnxruntime") or {}
            power = f", {dev['nvpmodel']}" if dev.get("nvpmodel") else ""
            seen[p["target"]] = [
                p["target"],
                f"{dev.get('board') or dev.get('cpu') or '–'}{power}",
                _value(dev.get("usable_cores") or dev.get("logical_cores")),
                _value(dev.get("governor")),
                clock,
                temp,
                _throttled(after.get("throttled") or dev.get("throttled")),
                _value(ort.get("version") if isinstance(ort, dict) else ort),
            ]
    return Table(headers, list(seen.values()), [False, False, True, False, True, True, False, False])


def operators_table(report: dict[str, Any], top: int = TOP_OPERATORS) -> Table:
    """Per artifact (first profiled setting), the operator types that take most of the kernel time."""
    headers = ["Artifact", "Setting", "Operator", "Mean time", "Share"]
    rows = []
    for artifact in report["artifacts"]:
        profiled = [
            p for p in artifact["profiles"] if (p["device"].get("op_profile") or {}).get("by_op_type")
        ]
        if not profiled:
            continue
        p = profiled[0]
        for op in p["device"]["op_profile"]["by_op_type"][:top]:
            rows.append(
                [
                    artifact["name"],
                    fmt.setting(p["target"], p["threads"], p["batch"]),
                    op["op_type"],
                    fmt.ms(op["mean_ms"]),
                    fmt.pct(op["share"], 0),
                ]
            )
    return Table(headers, rows, [False, False, False, True, True])
