"""The teacher stage: the unpruned model as the report states it (size, MACs, PyTorch metrics on the eval set).

The teacher itself is built by :func:`edgekd.run.prepare` (it is part of every stage's context); this stage
only measures it, so a resumed run can reuse the measurement.
"""

from __future__ import annotations

import logging
from typing import Any

from edgekd.context import RunContext, Stage, Upstream, section
from edgekd.engine.summary import summarize
from edgekd.io import sha256_file
from edgekd.results import TeacherResult

log = logging.getLogger("edgekd")


def run(ctx: RunContext, upstream: Upstream) -> TeacherResult:
    """Params, MACs and eval metrics of ``ctx.teacher``."""
    summary = summarize(ctx.teacher, ctx.data, ctx.task, ctx.recipe.data.eval_batch_size)
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in summary.metrics.items())
    log.info("teacher: %s, %.2f MMAC, %d params", metrics, summary.macs / 1e6, summary.params)
    return TeacherResult(summary)


def inputs(ctx: RunContext, upstream: Upstream) -> dict[str, Any]:
    checkpoint = ctx.recipe.teacher.checkpoint
    return {
        "task": ctx.recipe.task,
        "data": section(ctx.recipe, "data"),
        "teacher": section(ctx.recipe, "teacher"),
        "checkpoint": sha256_file(checkpoint) if checkpoint else None,
    }


STAGE = Stage(name="teacher", result=TeacherResult, run=run, inputs=inputs)
