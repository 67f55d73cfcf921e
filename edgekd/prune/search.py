"""Find the channel pruning ratio that removes a requested fraction of MACs (or parameters).

torch-pruning takes a *channel* ratio, but edge budgets are stated in MACs or parameters. Achieved reduction
grows monotonically with the channel ratio but in steps (channel counts are integers, ``round_to`` coarsens
them), so a closed form cannot hit it. We search with the Illinois variant of false position (regula falsi)
on the bracket ``[0, max_ratio]``, extrapolating until a probe overshoots; each probe prunes a fresh copy. The
first guess ``1 - sqrt(1 - goal)`` is exact for a plain conv net (MACs scale with in × out channels), so a
typical search takes 1-3 probes; Illinois' down-weighting of a stale end keeps the bracket shrinking fast even
though the curve is a step function. ``max_ratio`` itself is probed only when extrapolation reaches it, and a
shortfall there means the goal is infeasible.

Pure Python by design: it only calls ``probe(ratio) -> achieved`` and is tested without any model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from edgekd.errors import InputError


class WindowMissed(InputError):
    """The reduction steps over ``goal ± tolerance``: reachable on both sides, never inside the window."""


@dataclass(frozen=True)
class SearchOutcome:
    ratio: float
    achieved: float
    probes: tuple[tuple[float, float], ...] = field(default_factory=tuple)  # (ratio, achieved) in probe order


def search_ratio(
    probe: Callable[[float], float],
    goal: float,
    tolerance: float,
    max_ratio: float,
    what: str = "MACs",
    max_probes: int = 16,
    min_width: float = 1e-4,
) -> SearchOutcome:
    """Return the channel ratio whose ``probe`` lands within ``tolerance`` of ``goal``.

    Args:
        probe: prunes a copy at a channel ratio and returns the achieved reduction (fraction in [0, 1]).
        goal: the requested reduction.
        tolerance: accepted ``|achieved - goal|``.
        max_ratio: the largest channel ratio allowed (``prune.max_layer_ratio``).
        what: "MACs" or "params", for messages.

    Raises:
        InputError: the goal is out of reach even at ``max_ratio``; :class:`WindowMissed` when no ratio
            lands within tolerance (the reduction jumps over the window). The message says what was reached
            and what to change.
    """
    probes: list[tuple[float, float]] = []

    def run(ratio: float) -> float:
        achieved = probe(ratio)
        probes.append((ratio, achieved))
        return achieved

    lo, g_lo = 0.0, -goal  # g = achieved - goal: negative below the goal, positive above it
    hi, g_hi = max_ratio, math.nan  # nan: nothing probed has reached the goal yet
    last_side = 0
    ratio = min(max(1.0 - math.sqrt(max(1.0 - goal, 0.0)), 1e-3), max_ratio)
    for _ in range(max_probes):
        achieved = run(ratio)
        if abs(achieved - goal) <= tolerance:
            return SearchOutcome(ratio, achieved, tuple(probes))
        if achieved < goal:
            if ratio >= max_ratio:
                raise InputError(
                    f"prune: cannot remove {goal:.1%} of {what} (reached {achieved:.1%} at the maximum "
                    f"channel ratio {max_ratio:g}); raise prune.max_layer_ratio, enable "
                    "prune.global_pruning, shorten prune.ignored_layers, or lower prune.reduction"
                )
            lo, g_lo = ratio, achieved - goal
            if last_side < 0 and not math.isnan(g_hi):
                g_hi /= 2  # Illinois: the other end was kept twice, so shrink its weight
            last_side = -1
        else:
            hi, g_hi = ratio, achieved - goal
            if last_side > 0:
                g_lo /= 2
            last_side = 1
        if hi - lo < min_width:
            break
        if math.isnan(g_hi):  # no upper end yet: extrapolate linearly through the origin
            ratio = lo * goal / (g_lo + goal) if g_lo + goal > 0 else hi
        else:  # false position on the bracket
            ratio = lo + (hi - lo) * (-g_lo) / (g_hi - g_lo)
        ratio = min(max(ratio, lo + 0.02 * (hi - lo)), hi if math.isnan(g_hi) else hi - 0.02 * (hi - lo))
    closest_ratio, closest = min(probes, key=lambda p: abs(p[1] - goal))
    raise WindowMissed(
        f"prune: no channel ratio removes {goal:.1%} ± {tolerance:.1%} of {what} (closest: {closest:.1%} at "
        f"ratio {closest_ratio:.4f}; the reduction jumps over the window); raise prune.tolerance, lower or "
        "unset prune.round_to, or enable prune.global_pruning for finer steps"
    )
