"""``edgekd compress``: teacher → prune → distill → export → profile → report, in one run directory.

This module only sequences stages: each stage is called through its public ``run``-style function and hands back
a result dataclass (``edgekd.results``); nothing here reaches into a stage's internals. Every file lands through
``edgekd.io`` (atomic), the run directory is locked for the duration, and the resolved recipe is written first
so a run directory always says what produced it.

Every stage ends by leaving a marker in ``state/`` (:mod:`edgekd.resume`) with its inputs hash, its output files'
hashes and its result as JSON; ``--resume`` reuses a stage whose marker still holds and reruns the rest.
Distillation always starts from ``state/pruned.pt`` (the pruned student reloaded from disk), in a fresh run as
in a resumed one, so both train exactly the same model.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from edgekd import __version__
from edgekd.data import DataBundle, build_data
from edgekd.engine.distributed import requested_world_size, world_size
from edgekd.engine.teacher import build_extra_teachers, build_teacher
from edgekd.engine.trainer import seed_everything
from edgekd.errors import InputError
from edgekd.gates import evaluate_gates, parity_gates, raise_if_failed
from edgekd.io import RunLock, remove_stale_temporaries, sha256_file, write_text
from edgekd.ranks import compress_on_ranks, serving_ranks, share_distill_job
from edgekd.recipe import Recipe, dump_recipe
from edgekd.results import Artifact, ModelSummary, Profile, PruneResult, TrainResult, from_dict, to_dict
from edgekd.resume import RunState, hash_inputs, without_permissions
from edgekd.run_support import (
    StageClock,
    check_teacher,
    load_run_student,
    pt_artifact,
    run_log,
    save_run_student,
    summarize,
)
from edgekd.rundir import RunDir
from edgekd.tasks import get_task

log = logging.getLogger("edgekd")


def compress(recipe: Recipe, out: Path, resume: bool = False, force: bool = False) -> dict[str, Any]:
    """Run the whole pipeline into ``out`` and return the report (as written to ``report.json``).

    Args:
        recipe: the resolved recipe.
        out: the run directory (created if missing).
        resume: continue a killed run in ``out``: finished stages are reused (see :mod:`edgekd.resume`),
            distillation continues from its last epoch checkpoint. Without it, a previous run's state and
            artifacts in ``out`` are removed first.
        force: with ``resume``, accept a recipe that differs from the run's; only affected stages rerun.

    Returns:
        The report. Under torchrun (``WORLD_SIZE`` > 1) every rank calls this and distils data-parallel
        (see :mod:`edgekd.ranks`); rank 0 alone writes ``out`` and returns the report, the others ``None``.

    Raises:
        InputError: bad recipe values discovered while building data/models, or a resume with a different
            recipe (exit 2).
        GateError: the student's ONNX parity gate failed (exit 3); earlier artifacts stay, none is half-written.
    """
    if force and not resume:
        raise InputError("--force only applies to --resume (a new run always uses the recipe as given)")
    if requested_world_size() > 1 and not serving_ranks():  # one rank of a torchrun job (see edgekd.ranks)
        return compress_on_ranks(recipe, out, resume, force)  # type: ignore[return-value]
    run = RunDir(out).create()
    with RunLock(run.root):
        state = RunState(run)
        resuming = resume and state.has_previous_run()
        if resuming:
            state.check_recipe(recipe.to_yaml_dict(), force)
        else:
            state.start_fresh()
        with run_log(run.log, append=resuming):
            remove_stale_temporaries(run.root)
            if resume and not resuming:
                log.info("nothing to resume in %s; starting a new run", run.root)
            write_text(run.recipe, dump_recipe(recipe))
            log.info("edgekd %s: compress → %s%s", __version__, run.root, " (resumed)" if resuming else "")
            return _Pipeline(recipe, run, state, resuming).execute()


class _Pipeline:
    """One ``compress`` run: each stage is reused from its marker when resuming, else computed and marked.

    A stage's inputs hash chains the previous stage's hash with the recipe sections and files it reads, so a
    change anywhere upstream reruns everything downstream (see :mod:`edgekd.resume`).
    """

    def __init__(self, recipe: Recipe, run: RunDir, state: RunState, resuming: bool) -> None:
        self.recipe, self.run, self.state, self.resuming = recipe, run, state, resuming
        self.clock = StageClock()
        self.task = get_task(recipe.task)
        self.pruned_pt = run.state / "pruned.pt"
        self.student: nn.Module | None = None  # the distilled student, when this process distilled it

    def stage(
        self, name: str, inputs: str, compute: Callable[[dict[str, Any]], tuple[list[Path], Any]]
    ) -> Any:
        """The stage's JSON result: from its marker when resuming and still valid, else from ``compute``."""
        with self.clock.stage(name) as info:
            marker = self.state.load(name, inputs) if self.resuming else None
            if marker is not None:
                log.info("%s: reused from the interrupted run (finished in %.1fs)", name, marker.seconds)
                info.update(seconds=marker.seconds, reused=True)
                return marker.result
            self.state.invalidate(name)
            started = time.perf_counter()
            outputs, result = compute(info)
            self.state.finish(name, inputs, outputs, time.perf_counter() - started, result)
            return result

    def execute(self) -> dict[str, Any]:
        from edgekd.report import build_report, write_reports

        recipe = self.recipe
        seed_everything(recipe.seed)
        with self.clock.stage("data") as info:
            self.data = build_data(recipe.data)
            info.update(train=len(self.data.train), eval=len(self.data.eval))
        self.task = get_task(recipe.task, self.data)  # specialised to the targets (e.g. gaze angles)
        self.teacher = build_teacher(recipe, self.data)
        self.extra_teachers = build_extra_teachers(
            recipe, self.data
        )  # fail on a bad checkpoint before pruning
        check_teacher(self.teacher, self.data, self.task)
        teacher_summary, inputs = self.summarize_teacher()
        prune_result, inputs = self.prune(inputs)
        distill_result, student_summary, inputs = self.distill(inputs, prune_result)
        artifacts, inputs = self.export(inputs)
        artifacts = self.profile(inputs, artifacts)
        artifacts.append(pt_artifact(self.run.student_pt, student_summary.metrics))
        gates = parity_gates(artifacts, recipe.export)
        gates += evaluate_gates(recipe.gates, artifacts, self.task)
        report = build_report(
            recipe=recipe.to_yaml_dict(),
            task=recipe.task,
            teacher=teacher_summary,
            student=student_summary,
            prune=prune_result,
            distill=distill_result,
            artifacts=artifacts,
            gates=gates,
            stages=self.clock.stages,
        )
        report["reproducibility"] = reproducibility(recipe, self.clock.stages)
        if self.task.dense_output and {"md", "html"} & set(recipe.report.formats):
            segmentation_strip(self.run, self.data)
        write_reports(self.run.root, report, recipe.report.formats)
        log.info("done: %s", self.run.report_md if "md" in recipe.report.formats else self.run.report_json)
        raise_if_failed(gates)  # exit 3 only now: a gated CI job still gets every file and the report
        return report

    def summarize_teacher(self) -> tuple[ModelSummary, str]:
        recipe = self.recipe
        checkpoint = recipe.teacher.checkpoint
        inputs = hash_inputs(
            {
                "stage": "teacher",
                "task": recipe.task,
                "data": _plain(recipe.data),
                "teacher": without_permissions(_plain(recipe.teacher), "teacher"),
                "checkpoint": sha256_file(checkpoint) if checkpoint else None,
            }
        )

        def compute(info: dict[str, Any]) -> tuple[list[Path], Any]:
            return [], to_dict(summarize(self.teacher, self.data, self.task, recipe.data.eval_batch_size))

        summary = from_dict(ModelSummary, self.stage("teacher", inputs, compute))
        macs, params = summary.macs / 1e6, summary.params
        log.info("teacher: %s, %.2f MMAC, %d params", _fmt(summary.metrics), macs, params)
        return summary, inputs

    def prune(self, upstream: str) -> tuple[PruneResult, str]:
        from edgekd import prune

        recipe, data = self.recipe, self.data
        inputs = hash_inputs(
            {"stage": "prune", "upstream": upstream, "seed": recipe.seed, "prune": _plain(recipe.prune)}
        )

        def compute(info: dict[str, Any]) -> tuple[list[Path], Any]:
            student, result = prune.run(self.teacher, data, self.task, recipe.prune, recipe.seed)
            save_run_student(self.pruned_pt, student, recipe, data, result, None)
            return [self.pruned_pt], to_dict(result)

        result = from_dict(PruneResult, self.stage("prune", inputs, compute))
        log.info(
            "pruned: MACs −%.1f%%, params −%.1f%%", 100 * result.macs_reduction, 100 * result.params_reduction
        )
        return result, inputs

    def distill(self, upstream: str, prune_result: PruneResult) -> tuple[TrainResult, ModelSummary, str]:
        from edgekd import distill

        recipe, data, run = self.recipe, self.data, self.run
        inputs = hash_inputs(
            {
                "stage": "distill",
                "upstream": upstream,
                "pruned": sha256_file(self.pruned_pt),
                "distill": _plain(recipe.distill),
                "extra_teachers": [
                    t.checkpoint and sha256_file(t.checkpoint) for t in recipe.distill.extra_teachers
                ],
            }
        )

        def compute(info: dict[str, Any]) -> tuple[list[Path], Any]:
            student = load_run_student(self.pruned_pt, recipe)
            checkpoint, resume = self.state.training_checkpoint("distill", inputs, self.resuming)
            share_distill_job(self.pruned_pt)  # the other ranks of a distributed run train with this one
            result = distill.run(
                student,
                [self.teacher, *self.extra_teachers],
                data,
                self.task,
                recipe.distill,
                recipe.data,
                recipe.seed,
                checkpoint=checkpoint,
                resume=resume,
            )
            info.update(epochs=result.epochs, best_epoch=result.best_epoch, resumed_checkpoint=resume)
            info.update(ranks=world_size())  # data-parallel processes (rounding differs with the count)
            info.update(teachers=1 + len(recipe.distill.extra_teachers))
            save_run_student(run.student_pt, student, recipe, data, prune_result, result)
            self.student = student
            summary = summarize(
                student, data, self.task, recipe.data.eval_batch_size, "the distilled student"
            )
            return [run.student_pt], {"train": to_dict(result), "student": to_dict(summary)}

        result = self.stage("distill", inputs, compute)
        share_distill_job(None)  # reused from a resumed run: the other ranks have nothing to train
        return from_dict(TrainResult, result["train"]), from_dict(ModelSummary, result["student"]), inputs

    def export(self, upstream: str) -> tuple[list[Artifact], str]:
        from edgekd import export

        recipe, run = self.recipe, self.run
        student_sha = sha256_file(run.student_pt)
        inputs = hash_inputs(
            {"stage": "export", "upstream": upstream, "student": student_sha, "export": _plain(recipe.export)}
        )

        def compute(info: dict[str, Any]) -> tuple[list[Path], Any]:
            student = self.student or load_run_student(run.student_pt, recipe)
            models = ((self.teacher, run.teacher_onnx, "teacher"), (student, run.student_onnx, "student"))
            artifacts = [
                export.export_onnx(
                    model, self.data, self.task, recipe.export, path, name=path.name, metadata={"role": role}
                )
                for model, path, role in models
            ]
            artifacts += export.export_variants(
                run.student_onnx, student, self.data, self.task, recipe.export, run.root, recipe.seed
            )
            outputs = [run.teacher_onnx, run.student_onnx, *export.variant_paths(recipe.export, run.root)]
            return outputs, to_dict(artifacts)

        return [from_dict(Artifact, a) for a in self.stage("export", inputs, compute)], inputs

    def profile(self, upstream: str, artifacts: list[Artifact]) -> list[Artifact]:
        from edgekd import profile

        recipe, run = self.recipe, self.run
        shas = {a.name: a.sha256 for a in artifacts}  # what is timed: a re-exported file is profiled again
        inputs = hash_inputs(
            {"stage": "profile", "upstream": upstream, "artifacts": shas, "profile": _plain(recipe.profile)}
        )

        def compute(info: dict[str, Any]) -> tuple[list[Path], Any]:
            profiles = profile.run({a.name: run.root / a.path for a in artifacts}, recipe.profile)
            return [], {name: to_dict(list(found)) for name, found in profiles.items()}

        profiled = self.stage("profile", inputs, compute)
        return [
            dataclasses.replace(a, profiles=tuple(from_dict(Profile, p) for p in profiled.get(a.name, ())))
            for a in artifacts
        ]


def _plain(section: Any) -> dict[str, Any]:
    """A recipe section as JSON-ready data (paths as strings), for hashing."""
    return section.model_dump(mode="json")


def reproducibility(recipe: Recipe, stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What a rerun needs to reproduce this report's numbers bit for bit on CPU (versions: ``environment``).

    ``seed`` seeds Python, NumPy and torch at the start and again before distillation; torch-pruning runs
    under it; the training loader draws epoch ``e``'s order and augmentation from ``seed * 100003 + e``.
    CPU kernels reduce in an order that depends on ``torch_threads``, so that is recorded too.
    """
    import torch

    return {
        "seed": recipe.seed,
        "torch_threads": torch.get_num_threads(),
        "reused_stages": [name for name, info in stages.items() if info.get("reused")],
        "resumed_training": [name for name, info in stages.items() if info.get("resumed_checkpoint")],
    }


def segmentation_strip(run: RunDir, data: DataBundle) -> Path:
    """``plots/segmentation.png``: a few eval images with the masks of the shipped teacher and student files."""
    from edgekd.export.ort import OrtPredictor, create_session
    from edgekd.report.samples import SEGMENTATION_PLOT, write_segmentation_strip

    teacher, student = (OrtPredictor(create_session(p)) for p in (run.teacher_onnx, run.student_onnx))
    return write_segmentation_strip(run.plots / SEGMENTATION_PLOT, data, teacher, student)


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
