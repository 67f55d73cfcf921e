"""Single stages as commands (``edgekd prune | distill | export``), chained through the run directory.

``compress`` runs them all in one process; these let a user run, inspect and rerun one stage at a time. Each
starts from the same :func:`~edgekd.run.prepare` context as ``compress`` and calls the same stage code; they
communicate only through ``student.pt`` (whose metadata carries the resolved recipe) and ``state/<stage>.json``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgekd.context import Upstream
from edgekd.errors import InputError
from edgekd.io import write_json, write_text, write_with
from edgekd.recipe import Recipe, apply_overrides, dump_recipe
from edgekd.results import Artifact, PruneResult, TrainResult, to_dict
from edgekd.run.components import recipe_from_dict
from edgekd.run.log import open_run, run_log
from edgekd.run.prepare import prepare
from edgekd.run.resume import RunState
from edgekd.rundir import RunDir


@contextmanager
def _locked(out: Path) -> Iterator[RunDir]:
    """The run directory, locked and logged, as ``compress`` has it (:func:`~edgekd.run.log.open_run`)."""
    with open_run(out) as run, run_log(run.log):
        yield run


def prune_only(recipe: Recipe, out: Path) -> PruneResult:
    """Prune the recipe's teacher and save the (not yet distilled) student to ``OUT/student.pt``.

    With ``prune.sparsity`` the teacher's copy is sparse-trained first, as ``compress`` does.
    """
    from edgekd import prune, sparsify

    with _locked(out) as run:
        write_text(run.recipe, dump_recipe(recipe))
        ctx = prepare(recipe, run)
        upstream = Upstream()
        for stage in (sparsify.STAGE, prune.STAGE):
            RunState(run).forget(stage.name)
        if sparsify.STAGE.applies(recipe):
            upstream = upstream.plus("sparsify", sparsify.run(ctx, upstream), {})
        result = prune.run(ctx, upstream)
        write_with(run.student_pt, lambda tmp: shutil.copyfile(run.pruned_pt, tmp))
        summary = {**to_dict(result), "macs_reduction": result.macs_reduction}
        write_json(run.stage_result("prune"), {**summary, "params_reduction": result.params_reduction})
        return result


def distill_only(recipe: Recipe, out: Path, student_path: Path | None = None) -> TrainResult:
    """Distill ``student_path`` (default ``OUT/student.pt``) from the recipe's teacher; rewrite ``OUT/student.pt``."""
    from edgekd.distill import train_student
    from edgekd.engine.run_student import load_run_student, save_run_student, stored_prune_result

    run = RunDir(out)
    source = student_path or run.student_pt
    if not source.is_file():
        raise InputError(f"{source}: no student to distill; run `edgekd prune` first or pass --student")
    with _locked(out) as run:
        student = load_run_student(source, recipe)
        ctx = prepare(recipe, run)
        RunState(run).forget("distill")
        result = train_student(ctx, student, run.checkpoint("distill"))
        save_run_student(run.student_pt, student, ctx, stored_prune_result(source), result)
        write_json(run.stage_result("distill"), to_dict(result))
        return result


def export_only(
    student_path: Path, out: Path, overrides: tuple[str, ...] = (), trust: bool = False
) -> list[Artifact]:
    """Export a ``student.pt`` to ``OUT/student.onnx`` (then ``student.int8/fp16.onnx`` if enabled).

    Data, task and export settings come from the file's metadata (``--set`` overrides apply), so
    ``--set export.int8=true`` adds the INT8 file to an earlier run's student. Returns the FP32 artifact first.
    """
    from edgekd.export import export_student
    from edgekd.models.student_file import load_student, read_student_meta

    meta = read_student_meta(student_path)
    if not isinstance(meta.get("recipe"), dict):
        raise InputError(
            f"{student_path}: carries no recipe metadata; it was not written by edgekd compress/prune"
        )
    source = f"{student_path} (recipe)"
    recipe = recipe_from_dict(apply_overrides(meta["recipe"], overrides), source, overrides)
    with _locked(out) as run:
        student = load_student(student_path, trust=trust)
        artifacts = export_student(prepare(recipe, run, teachers=False), student)
        write_json(run.stage_result("export"), to_dict(artifacts))
        return artifacts
