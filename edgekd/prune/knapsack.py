"""The greedy knapsack of channel allocation: remove what costs the least importance per unit of budget saved.

Why not one channel ratio for every layer: a uniform ratio spends the budget where it is cheap to describe,
not where it is cheap to lose. A layer at 112x112 saves 16x more MACs per channel than one at 28x28, and on a
CPU a width off the SIMD block can make a layer *slower* when it shrinks; a single ratio sees neither, and on
DenseNet-121 with ``round_to: 8`` the reachable MACs cuts jump from 42.8% to 61.4% between two ratios, so a
±1% window cannot be hit (issue 14). HALP (Shen et al., "Structural Pruning via Latency-Saliency Knapsack",
NeurIPS'22) states pruning as a knapsack: keep the channels whose importance is highest per unit of latency
they cost, the latency read from a per-layer table at the layer's current widths. NetAdapt (Yang et al.,
ECCV'18) takes greedy steps from per-layer lookup tables, each step shrinking the layer that saves the most for
the least loss. This module is that greedy knapsack over torch-pruning's dependency groups:

1. each group (coupled layers that must keep one width: a residual stage, a depthwise block, a DenseNet
   growth slice) ranks its channels with the recipe's importance criterion (:mod:`edgekd.prune.importance`);
2. a step removes the group's least important channels down to the next allowed width (multiples of
   ``round_to``; with a latency cost, any width within ``lookahead`` channels, so a step can land on a width
   the latency model predicts fast, e.g. 48 rather than 44), scored by importance lost / cost saved: the loss
   weighted by how thin the group already is (:func:`cumulative`), the saving computed from the layers the
   group touches at the current widths of all groups (:mod:`edgekd.prune.budget`);
3. the step with the lowest ratio is taken until the budget is met; a step that would overshoot the
   tolerance window yields to a smaller one that does not (:class:`Goal`).

The allocation is pure arithmetic on numbers (no model: tested without one); :mod:`edgekd.prune.allocate`
reads the groups from a model, calls :func:`allocate` and prunes the model once, at the end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from edgekd.errors import InputError
from edgekd.prune.budget import Cost, LayerShape


@dataclass(frozen=True)
class Touch:
    """A layer a group's channels reach: how many of its input / output channels go per group channel."""

    layer: int
    d_in: float
    d_out: float


@dataclass(frozen=True)
class GroupChoice:
    """One prunable dependency group as the allocator sees it.

    Attributes:
        name: the root module's name.
        full: the group's channels before pruning.
        widths: the widths it may keep, descending from ``full``.
        order: channel indices, least important first (what a step removes next).
        lost: ``lost[k]``: what removing the ``k`` least important channels loses (:func:`cumulative`).
        touches: the layers whose widths follow this group's.
        mass: the criterion's plain scores summed, least important first (``mass[k]``: the ``k`` lowest).
    """

    name: str
    full: int
    widths: tuple[int, ...]
    order: tuple[int, ...]
    lost: tuple[float, ...]
    touches: tuple[Touch, ...]
    mass: tuple[float, ...] = ()


@dataclass(frozen=True)
class Goal:
    """What to spend down to, in the cost's layer-sum units (:meth:`~edgekd.prune.budget.Cost.layer_sum_for`).

    Attributes:
        cost: the cost model.
        stop: allocate until the layer sum is at most this.
        low: the lowest acceptable layer sum: a step landing below it yields to one that does not, if any.
        lookahead: channels a step may skip past the next allowed width (0: the next width only).
        detour: how much worse (importance lost per unit saved) a step that stays above ``low`` may be than the
            best one and still be preferred to it. Unbounded for MACs/params, whose window is the budget's
            tolerance; 2 for latency, whose budget is a ceiling: one channel above a SIMD block can cost
            twice the time of the block (issue 14's depthwise 47 vs 48), so landing on it to stay inside the
            window would keep a slow width; overshooting to the fast one is the better trade.
    """

    cost: Cost
    stop: float
    low: float
    lookahead: int = 0
    detour: float = math.inf


@dataclass(frozen=True)
class Allocation:
    """The kept width of each group, the cost it reaches, and how it got there."""

    kept: tuple[int, ...]
    layer_sum: float
    steps: int
    importance_kept: float  # share of the groups' summed criterion scores that the kept channels hold


def allowed_widths(full: int, min_keep: int, round_to: int | None) -> tuple[int, ...]:
    """Widths a group of ``full`` channels may keep: ``full``, then multiples of ``round_to`` down to ``min_keep``.

    >>> allowed_widths(32, 3, 8)
    (32, 24, 16, 8)
    >>> allowed_widths(6, 4, None)
    (6, 5, 4)
    """
    step = round_to if round_to and round_to > 1 else 1
    below = [w for w in range((full - 1) // step * step, 0, -step) if w >= max(min_keep, 1)]
    return (full, *below)


@dataclass(frozen=True)
class _Step:
    group: int
    width: int
    saving: float
    ratio: float


class _Greedy:
    """The allocation state: every group's kept width and every layer's current widths."""

    def __init__(self, groups: Sequence[GroupChoice], layers: Sequence[LayerShape], goal: Goal) -> None:
        self.groups, self.layers, self.goal = groups, layers, goal
        self.kept = [g.full for g in groups]
        self.cin = [float(s.cin) for s in layers]
        self.cout = [float(s.cout) for s in layers]
        self.depthwise = [s.kind in ("depthwise", "norm") for s in layers]
        self.total = sum(goal.cost.layer(i, s.cin, s.cout) for i, s in enumerate(layers))
        touching: dict[int, set[int]] = {}
        for gi, g in enumerate(groups):
            for t in g.touches:
                touching.setdefault(t.layer, set()).add(gi)
        self.neighbours = [sorted({h for t in g.touches for h in touching[t.layer]}) for g in groups]
        self.options = [self._options(gi) for gi in range(len(groups))]

    def _widths(self, layer: int, d_in: float, d_out: float, removed: int) -> tuple[int, int]:
        cout = self.cout[layer] - removed * d_out
        cin = cout if self.depthwise[layer] else self.cin[layer] - removed * d_in
        return max(int(round(cin)), 1), max(int(round(cout)), 1)

    def _saving(self, gi: int, removed: int) -> float:
        cost, saving = self.goal.cost, 0.0
        for t in self.groups[gi].touches:
            now = self._widths(t.layer, t.d_in, t.d_out, 0)
            then = self._widths(t.layer, t.d_in, t.d_out, removed)
            saving += cost.layer(t.layer, *now) - cost.layer(t.layer, *then)
        return saving

    def _options(self, gi: int) -> list[_Step]:
        """The steps group ``gi`` may take now: the next allowed width, or any within the lookahead that saves
        more than every wider one (a width the cost model says is slower than a wider one is never a step)."""
        g, width = self.groups[gi], self.kept[gi]
        below = [w for w in g.widths if w < width]
        reach = [w for w in below if width - w <= max(self.goal.lookahead, width - below[0])] if below else []
        steps, best = [], 0.0
        for w in reach:  # widest first
            saving = self._saving(gi, width - w)
            if saving <= best:
                continue  # a wider width saves as much: this one is slow (latency is not monotone in width)
            best = saving
            lost = g.lost[g.full - w] - g.lost[g.full - width]
            steps.append(_Step(gi, w, saving, max(lost, 0.0) / saving))
        return steps

    def choose(self) -> _Step | None:
        """The lowest-ratio step, unless it overshoots ``goal.low`` while another (not too much worse) would not."""
        steps = [s for options in self.options for s in options]
        if not steps:
            return None
        best = min(steps, key=lambda s: (s.ratio, -s.saving))
        if self.total - best.saving >= self.goal.low:
            return best
        limit = best.ratio * self.goal.detour if best.ratio > 0 else math.inf
        safe = [s for s in steps if self.total - s.saving >= self.goal.low and s.ratio <= limit]
        if safe:
            return min(safe, key=lambda s: (s.ratio, -s.saving))
        if math.isfinite(self.goal.detour):
            return best  # a ceiling: overshoot rather than keep a slow width
        return min(steps, key=lambda s: s.saving)  # every step overshoots: the smallest overshoot

    def take(self, step: _Step) -> None:
        g = self.groups[step.group]
        removed = self.kept[step.group] - step.width
        for t in g.touches:
            self.cin[t.layer] -= removed * t.d_in
            self.cout[t.layer] -= removed * t.d_out
        self.kept[step.group] = step.width
        self.total -= step.saving
        for h in self.neighbours[step.group]:
            self.options[h] = self._options(h)


def allocate(groups: Sequence[GroupChoice], layers: Sequence[LayerShape], goal: Goal) -> Allocation:
    """Choose each group's kept width so that the cost's layer sum falls to ``goal.stop`` (greedy knapsack).

    Raises:
        InputError: the goal is out of reach (every group at its smallest allowed width); the message says how
            far it got and what to relax.
    """
    state = _Greedy(groups, layers, goal)
    start, steps = state.total, 0
    while state.total > goal.stop:
        step = state.choose()
        if step is None:
            cost = goal.cost
            raise InputError(
                f"prune: cannot reach the {cost.name} budget (stopped at {cost.total(state.total):.4g} of "
                f"{cost.total(start):.4g}, goal {cost.total(goal.stop):.4g}: every group is at its smallest "
                "allowed width); raise prune.max_layer_ratio, shorten prune.ignored_layers, lower "
                "prune.round_to, or ask for less"
            )
        state.take(step)
        steps += 1
    total_mass = sum(g.mass[-1] for g in groups if g.mass)
    lost = sum(g.mass[g.full - k] for g, k in zip(groups, state.kept, strict=True) if g.mass)
    kept_fraction = 1.0 - lost / total_mass if total_mass > 0 else 1.0
    return Allocation(tuple(state.kept), state.total, steps, kept_fraction)


def cumulative(
    scores: Sequence[float], weight: float = 1.0
) -> tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...]]:
    """``(order, lost, mass)`` of a group's importance scores: least important first, running losses and sums.

    The ``i``-th removal (0-based) of ``n`` channels loses ``weight * score * n / (n - i)``: its score, scaled
    by how few channels are left to absorb it. Why: torch-pruning's group scores are normalised per group
    (mean 1) so they rank channels *within* a group but say nothing about thinning a whole group; with plain
    sums a linear knapsack strips whichever group is cheapest per unit to its floor (ResNet-18's residual
    stream to 8 of 64 channels for a 50% MACs cut). The ``n / (n - i)`` factor makes the loss of keeping a
    fraction ``f`` of a group grow like ``-log f`` (diminishing returns of width), so every group gives up
    channels in proportion to what they save, and ``weight`` (the layers the group's channels feed and leave)
    counts a channel coupled through five layers as more than one read by two, as HALP's group-summed
    saliency does (Shen et al., NeurIPS'22). Ties keep channel order, so equal scores prune the same channels
    every run.

    >>> cumulative([0.5, 0.1, 0.3])
    ((1, 2, 0), (0.0, 0.1, 0.55, 2.05), (0.0, 0.1, 0.4, 0.9))
    """
    order = tuple(sorted(range(len(scores)), key=lambda i: (scores[i], i)))
    n, lost, mass = len(order), [0.0], [0.0]
    for rank, i in enumerate(order):
        value = float(scores[i])
        value = max(value, 0.0) if math.isfinite(value) else 0.0
        lost.append(lost[-1] + weight * value * n / (n - rank))
        mass.append(mass[-1] + value)
    return order, tuple(round(v, 12) for v in lost), tuple(round(v, 12) for v in mass)
