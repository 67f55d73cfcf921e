"""``edgekd compress``: walk :data:`PIPELINE` — teacher → (sparsify) → (calibrate) → prune → distill → export →
profile → report — in one run directory.

This module only sequences stages (:mod:`edgekd.context`): each is ``run(ctx, upstream) -> result`` and
declares what its resume hash covers; nothing here knows what a stage does. Every file lands through
``edgekd.io`` (atomic), the run directory is locked for the duration, and the resolved recipe is written first
so a run directory always says what produced it.

Every resumable stage ends by leaving a marker in ``state/`` (:mod:`edgekd.run.resume`) with its inputs hash,
its output files' hashes and its result as JSON; ``--resume`` reuses a stage whose marker still holds and reruns
the rest. A stage's inputs hash chains the previous stage's hash with what the stage itself declares, so a
change anywhere upstream reruns everything downstream.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

from edgekd import __version__, distill, export, latency, profile, prune, report, sparsify, teacher
from edgekd.context import RunContext, Stage, Upstream
from edgekd.engine import distributed
from edgekd.engine.device import distill_device
from edgekd.errors import InputError
from edgekd.io import remove_stale_temporaries, write_text
from edgekd.recipe import Recipe, dump_recipe
from edgekd.report.gates import raise_if_failed
from edgekd.results import BudgetCheck, ReportResult, from_dict, to_dict
from edgekd.run.log import open_run, run_log, stage_clock
from edgekd.run.prepare import prepare
from edgekd.run.ranks import follow, serving, serving_ranks, share_distill_job
from edgekd.run.refine import FIRST_STAGE, LAST_STAGE, REPRUNE_STAGE, missed_budget, refine_entry
from edgekd.run.resume import RunState, hash_inputs
from edgekd.rundir import REPORT_JSON, REPORT_MD

log = logging.getLogger("edgekd")

PIPELINE: tuple[Stage, ...] = (
    teacher.STAGE,
    sparsify.STAGE,
    latency.STAGE,  # calibrate: only with prune.target: latency
    prune.STAGE,
    distill.STAGE,
    export.STAGE,
    profile.STAGE,
    report.STAGE,
)


def compress(recipe: Recipe, out: Path, resume: bool = False, force: bool = False) -> dict[str, Any] | None:
    """Run the whole pipeline into ``out`` and return the report (as written to ``report.json``).

    Args:
        recipe: the resolved recipe.
        out: the run directory (created if missing; removed again if the run fails before any result).
        resume: continue a killed run in ``out``: finished stages are reused (see :mod:`edgekd.run.resume`),
            distillation continues from its last epoch checkpoint. Without it, a previous run's state and
            artifacts in ``out`` are removed first.
        force: with ``resume``, accept a recipe that differs from the run's; only affected stages rerun.

    Returns:
        The report. Under torchrun (``WORLD_SIZE`` > 1) every rank calls this and distils data-parallel
        (see :mod:`edgekd.run.ranks`); rank 0 alone writes ``out`` and returns the report, the others ``None``.

    Raises:
        InputError: bad recipe values discovered while building data/models, or a resume with a different
            recipe (exit 2).
        GateError: a deploy gate failed (exit 3), raised once every file and the report are written.
    """
    if force and not resume:
        raise InputError("--force only applies to --resume (a new run always uses the recipe as given)")
    if distributed.requested_world_size() > 1 and not serving_ranks():  # one rank of a torchrun job
        with distributed.session(distill_device(recipe).device):  # nccl on CUDA (cuda:LOCAL_RANK), else gloo
            if not distributed.is_main():
                follow(recipe, out)  # the other ranks only help rank 0 distil (see edgekd.run.ranks)
                return None
            with serving():
                return compress(recipe, out, resume=resume, force=force)
    with open_run(out) as run:  # a failure before any result leaves no run directory it created
        state = RunState(run)
        resuming = resume and state.has_previous_run()
        with run_log(run.log, append=resuming):  # the error that ends the run is logged here too
            if resuming:
                state.check_recipe(recipe.to_yaml_dict(), force)
            elif resume:
                log.info("nothing to resume in %s; starting a new run", run.root)
            remove_stale_temporaries(run.root)
            log.info("edgekd %s: compress → %s%s", __version__, run.root, " (resumed)" if resuming else "")
            with stage_clock("data") as data:  # before a previous run is replaced: bad input leaves it whole
                ctx = prepare(recipe, run)
                data.update(
                    train=len(ctx.data.train),
                    val=len(ctx.data.val) if ctx.data.val is not None else 0,
                    eval=len(ctx.data.eval),
                )
            if not resuming:
                state.start_fresh()
            write_text(run.recipe, dump_recipe(recipe))
            final = _Walk(state, resuming).through(ctx, Upstream(stages={"data": data}), PIPELINE)
            result = final.get(ReportResult)
            explained = REPORT_MD if "md" in recipe.report.formats else REPORT_JSON
            raise_if_failed(list(result.gates), explained)  # exit 3 only now: a gated CI job gets every file
            return result.report


@dataclasses.dataclass
class _Walk:
    """One walk through the stages: each is reused from its marker when resuming, else run and marked."""

    state: RunState
    resuming: bool

    def through(self, ctx: RunContext, upstream: Upstream, stages: tuple[Stage, ...]) -> Upstream:
        """Run ``stages`` in order; with ``prune.latency.refine`` a missed budget walks calibrate..profile again.

        A refinement whose prune cannot reach the budget on the corrected model keeps the first student (the
        prune stage fails before writing anything); any other failure ends the run as usual.
        """
        chained: str | None = None
        before: dict[str, str | None] = {}  # the chained hash each stage started from (a refinement restarts)
        missed: list[BudgetCheck] = []
        kept: tuple[Upstream, str | None] | None = None  # the walk before a refinement round
        names = [stage.name for stage in stages]
        i = 0
        while i < len(stages):
            stage = stages[i]
            before[stage.name] = chained
            if stage.applies(ctx.recipe):
                try:
                    with stage_clock(stage.name) as entry:
                        result, chained = self.stage(ctx, upstream, stage, chained, entry)
                except InputError as exc:
                    if kept is None or stage.name != REPRUNE_STAGE:
                        raise
                    log.warning("refine: %s; the first student is kept", exc)
                    (upstream, chained), i = kept, names.index(LAST_STAGE) + 1
                    upstream = upstream.plus("refine", tuple(missed), refine_entry(missed, str(exc)))
                    continue
                upstream = upstream.plus(stage.name, result, entry)
            check = missed_budget(ctx.recipe, upstream, len(missed)) if stage.name == LAST_STAGE else None
            if check is not None and FIRST_STAGE in before:
                missed.append(check)
                kept = (upstream, chained)
                upstream = upstream.plus("refine", tuple(missed), refine_entry(missed))
                i, chained = names.index(FIRST_STAGE), before[FIRST_STAGE]
                continue
            i += 1
        return upstream

    def stage(
        self, ctx: RunContext, upstream: Upstream, stage: Stage, chained: str | None, entry: dict[str, Any]
    ) -> tuple[Any, str]:
        """Stage ``stage``'s result (reused or computed) and its inputs hash, for the next stage to chain."""
        inputs = hash_inputs({"stage": stage.name, "upstream": chained, **stage.inputs(ctx, upstream)})
        marker = self.state.load(stage.name, inputs) if self.resuming and stage.resumable else None
        if stage.data_parallel:  # the other ranks of a distributed run train with this one, or leave
            share_distill_job(None if marker is not None else ctx.run.pruned_pt)
        if marker is not None:
            log.info("%s: reused from the interrupted run (finished in %.1fs)", stage.name, marker.seconds)
            result = from_dict(stage.result, marker.result)
            # what the stage reported then, rebuilt from its result: a resumed report keeps every stage's keys
            entry.update(stage.info(ctx, result), seconds=marker.seconds, reused=True)
            return result, inputs
        self.state.invalidate(stage.name)
        if stage.trains:
            _, resumable = self.state.training_checkpoint(stage.name, inputs, self.resuming)
            ctx = dataclasses.replace(ctx, resume_training=resumable)
        started = time.perf_counter()
        result = stage.run(ctx, upstream)
        if stage.resumable:
            outputs = stage.outputs(ctx, result)
            self.state.finish(stage.name, inputs, outputs, time.perf_counter() - started, to_dict(result))
        entry.update(stage.info(ctx, result))
        return result, inputs
