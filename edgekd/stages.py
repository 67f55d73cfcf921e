"""Single stages as commands (``edgekd prune | distill | export``), chained through the run directory.

``compress`` runs them all in one process; these let a user run, inspect and rerun one stage at a time. They
communicate only through ``student.pt`` (whose metadata carries the resolved recipe) and ``state/<stage>.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.data import build_data
from edgekd.engine.teacher import build_extra_teachers, build_teacher
from edgekd.engine.trainer import seed_everything
from edgekd.errors import InputError
from edgekd.io import RunLock, write_json, write_text
from edgekd.recipe import Recipe, apply_overrides, dump_recipe, recipe_from_dict
from edgekd.results import Artifact, PruneResult, to_dict
from edgekd.resume import RunState
from edgekd.run_support import check_teacher, load_run_student, run_log, save_run_student
from edgekd.rundir import RunDir
from edgekd.tasks import get_task


def prune_only(recipe: Recipe, out: Path) -> dict[str, Any]:
    """Prune the recipe's teacher and save the (not yet distilled) student to ``OUT/student.pt``."""
    from edgekd import prune

    run = RunDir(out).create()
    with RunLock(run.root), run_log(run.log):
        write_text(run.recipe, dump_recipe(recipe))
        seed_everything(recipe.seed)
        data = build_data(recipe.data)
        teacher = build_teacher(recipe, data)
        student, result = prune.run(teacher, data, get_task(recipe.task, data), recipe.prune, recipe.seed)
        save_run_student(run.student_pt, student, recipe, data, result, None)
        summary = {
            **to_dict(result),
            "macs_reduction": result.macs_reduction,
            "params_reduction": result.params_reduction,
        }
        write_json(run.stage_result("prune"), summary)
        return summary


def distill_only(recipe: Recipe, out: Path, student_path: Path | None = None) -> dict[str, Any]:
    """Distill ``student_path`` (default ``OUT/student.pt``) from the recipe's teacher; rewrite ``OUT/student.pt``."""
    from edgekd import distill
    from edgekd.models.student_file import read_student_meta

    run = RunDir(out).create()
    source = student_path or run.student_pt
    if not source.is_file():
        raise InputError(f"{source}: no student to distill; run `edgekd prune` first or pass --student")
    with RunLock(run.root), run_log(run.log):
        meta = read_student_meta(source)
        student = load_run_student(source, recipe)
        data = build_data(recipe.data)
        task = get_task(recipe.task, data)
        teacher = build_teacher(recipe, data)
        check_teacher(teacher, data, task)
        RunState(run).forget("distill")
        result = distill.run(
            student,
            [teacher, *build_extra_teachers(recipe, data)],
            data,
            task,
            recipe.distill,
            recipe.data,
            recipe.seed,
            checkpoint=run.state / "distill-last.pt",
        )
        prune_record = meta.get("prune")
        prune_result = _prune_result(prune_record) if prune_record else None
        save_run_student(run.student_pt, student, recipe, data, prune_result, result)
        summary = to_dict(result)
        write_json(run.stage_result("distill"), summary)
        return summary


def export_only(
    student_path: Path, out: Path, overrides: tuple[str, ...] = (), trust: bool = False
) -> list[Artifact]:
    """Export a ``student.pt`` to ``OUT/student.onnx`` (then ``student.int8/fp16.onnx`` if enabled).

    Data, task and export settings come from the file's metadata (``--set`` overrides apply), so
    ``--set export.int8=true`` adds the INT8 file to an earlier run's student. Returns the FP32 artifact first.
    """
    from edgekd.export import export_onnx, export_variants
    from edgekd.models.student_file import load_student, read_student_meta

    meta = read_student_meta(student_path)
    if not isinstance(meta.get("recipe"), dict):
        raise InputError(
            f"{student_path}: carries no recipe metadata; it was not written by edgekd compress/prune"
        )
    recipe = recipe_from_dict(apply_overrides(meta["recipe"], overrides), source=f"{student_path} (recipe)")
    run = RunDir(out).create()
    with RunLock(run.root), run_log(run.log):
        student = load_student(student_path, trust=trust)
        data = build_data(recipe.data)
        task = get_task(recipe.task, data)
        artifacts = [
            export_onnx(
                student,
                data,
                task,
                recipe.export,
                run.student_onnx,
                name="student.onnx",
                metadata={"role": "student"},
            )
        ]
        artifacts += export_variants(
            run.student_onnx, student, data, task, recipe.export, run.root, recipe.seed
        )
        write_json(run.stage_result("export"), to_dict(artifacts))
        return artifacts


def _prune_result(record: dict[str, Any]) -> PruneResult:
    from edgekd.results import LayerChannels

    fields = dict(record)
    fields["layers"] = tuple(LayerChannels(**layer) for layer in record.get("layers", ()))
    return PruneResult(**fields)
