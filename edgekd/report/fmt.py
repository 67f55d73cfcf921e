"""Number formatting shared by report.md and report.html, so both say exactly the same thing.

Units follow docs/run-directory.md: latency in ms, memory in MiB, sizes human-readable with the exact byte count,
fraction metrics (accuracy, mIoU, ...) as percentages and their differences in percentage points.
"""

from __future__ import annotations

import math

from edgekd.report.schema import FRACTION_METRICS

MINUS = "\u2212"  # a real minus sign: "−0.8 pp" reads better than "-0.8 pp" in tables


def signed(value: float, digits: int = 1, suffix: str = "") -> str:
    text = f"{abs(value):.{digits}f}"
    if float(text) == 0:
        return f"±{text}{suffix}"
    return f"{'+' if value > 0 else MINUS}{text}{suffix}"


def pct(fraction: float | None, digits: int = 1) -> str:
    return "–" if fraction is None else f"{fraction * 100:.{digits}f} %"


def count(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def si(value: float | None) -> str:
    """Large counts (MACs, params) as 40.55 M / 1.23 G."""
    if value is None:
        return "–"
    for factor, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {unit}"
    return f"{value:g}"


def size(num_bytes: int | None) -> str:
    """``1.07 MiB (1,121,334 B)``: readable, and exact for comparing against ``ls -l``."""
    if num_bytes is None:
        return "–"
    value, unit = float(num_bytes), "B"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            break
        value /= 1024
    readable = f"{num_bytes} B" if unit == "B" else f"{value:.2f} {unit}"
    return readable if unit == "B" else f"{readable} ({num_bytes:,} B)"


def ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f} ms" if value < 1 else f"{value:.2f} ms"


def seconds(value: float | None) -> str:
    """``4.2 s``, ``1 min 35 s``, ``2 h 05 min``: stage durations as a person reads them."""
    if value is None:
        return "–"
    if value < 60:
        return f"{value:.1f} s"
    minutes, secs = divmod(round(value), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def ratio(value: float | None) -> str:
    return "–" if value is None else f"×{value:.2f}"


def metric(name: str, value: float | None) -> str:
    """A metric value in its natural unit: fractions as %, others (mae, degrees) with 4 significant digits."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if name in FRACTION_METRICS:
        return pct(value, 2)
    return f"{value:.4g}"


def metric_delta(name: str, value: float | None) -> str:
    """Difference of a metric: percentage points for fractions, plain signed number otherwise."""
    if value is None:
        return "–"
    if name in FRACTION_METRICS:
        return signed(value * 100, 2, " pp")
    return signed(value, 4)


def threads(n: int, cores: int | None = None) -> str:
    """Profiles use 0 for "all cores" (ORT's default); say so, with the count when the device reported it."""
    if n == 0:
        return f"all cores ({cores})" if cores else "all cores"
    return f"{n} thread" if n == 1 else f"{n} threads"


def setting(target: str, n_threads: int, batch: int, cores: int | None = None) -> str:
    return f"{target}, {threads(n_threads, cores)}, batch {batch}"


def short_sha(sha: str, n: int = 12) -> str:
    return sha[:n]


def passed(flag: bool | None) -> str:
    return "–" if flag is None else ("pass" if flag else "FAIL")
