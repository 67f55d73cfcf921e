"""The calibrate stage (``prune.target: latency``): the target's latency model, from the cache or measured.

It runs before pruning and only when the recipe prunes to a latency budget. A valid cached model (same device,
onnxruntime, threads, batch and architecture: :mod:`edgekd.latency.cache`) is reused in about a second;
otherwise the teacher's layers are timed on the target and fitted (minutes: ~2 for ResNet-18 at 224² here).
Either way ``report.json["stages"]["calibrate"]`` says which model the budget was allocated against and its
held-out error. The stage is never reused from a resume marker: the cache is the memory, and the entry must
name the model of *this* run.

Recipe::

    prune: {target: latency, reduction: 0.5, latency: {target: local, threads: 1, quick: false}}
    profile: {latency_cache: runs/latency-cache}
"""

from __future__ import annotations

from typing import Any

from edgekd.context import RunContext, Stage, Upstream, section
from edgekd.recipe import Recipe
from edgekd.results import CalibrateResult, to_dict


def calibration_config(recipe: Recipe) -> Any:
    """The :class:`~edgekd.latency.calibrate.CalibrationConfig` a recipe's ``prune.latency`` asks for."""
    from edgekd.latency.calibrate import CalibrationConfig

    latency = recipe.prune.latency
    return CalibrationConfig(threads=latency.threads, quick=latency.quick, cache=recipe.profile.latency_cache)


def run(ctx: RunContext, upstream: Upstream) -> CalibrateResult:
    """The latency model of ``ctx.teacher`` on ``prune.latency.target`` (cached, or calibrated now)."""
    from edgekd.latency.calibrate import ensure_latency_model

    latency = ctx.recipe.prune.latency
    example = ctx.data.example_input(1)
    found = ensure_latency_model(ctx.teacher, example, latency.target, calibration_config(ctx.recipe))
    return CalibrateResult(
        target=latency.target,
        threads=latency.threads,
        samples=found.samples,
        error={k: found.model.error.get(k) for k in ("within_10pct", "mape", "n")},
        cache_file=str(found.path),
        cache_key=found.path.stem,
        cached=found.reused,
        seconds=found.seconds,
    )


def inputs(ctx: RunContext, upstream: Upstream) -> dict[str, Any]:
    return {"latency": section(ctx.recipe, "prune")["latency"], "cache": ctx.recipe.profile.latency_cache}


def info(ctx: RunContext, result: CalibrateResult) -> dict[str, Any]:
    """``stages.calibrate``: ``{target, samples, error: {within_10pct, mape}}`` and which cached model it is."""
    entry = to_dict(result)
    entry["error"] = {"within_10pct": result.error.get("within_10pct"), "mape": result.error.get("mape")}
    entry["calibration_seconds"] = entry.pop("seconds")  # the stage's own seconds include the cache lookup
    return entry


STAGE = Stage(
    name="calibrate",
    result=CalibrateResult,
    run=run,
    inputs=inputs,
    info=info,
    resumable=False,
    applies=lambda recipe: recipe.prune.target == "latency",
)
