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

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from edgekd import __version__
from edgekd.data import DataBundle, build_data
from edgekd.engine.evaluate import evaluate_model
from edgekd.engine.teacher import build_teacher
from edgekd.engine.trainer import seed_everything
from edgekd.errors import InputError
from edgekd.io import RunLock, remove_stale_temporaries, sha256_file, write_text
from edgekd.models.complexity import count_complexity
from edgekd.recipe import Recipe, dump_recipe
from edgekd.results import Artifact, Gate, ModelSummary, Profile, PruneResult, TrainResult, from_dict, to_dict
from edgekd.resume import RunState, hash_inputs, without_permissions
from edgekd.rundir import RunDir
from edgekd.tasks import Task, get_task

log = logging.getLogger("edgekd")


@dataclass
class StageClock:
    """Wall-clock seconds per stage, for ``report.json["stages"]`` (and the slowest-stage line)."""

    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        info: dict[str, Any] = {}
        log.info("── %s", name)
        start = time.perf_counter()
        try:
            yield info
        finally:
            self.stages[name] = {"seconds": round(time.perf_counter() - start, 3), **info}


@contextlib.contextmanager
def run_log(path: Path, append: bool = True) -> Iterator[None]:
    """Mirror the ``edgekd`` logger (all levels) into ``RUN/edgekd.log`` for the run's duration.

    The log is the one file not written atomically: it is meant to be read while the run is going, and a
    killed run's log is most useful exactly as far as it got. A resumed run appends to it.
    """
    handler = logging.FileHandler(path, mode="a" if append else "w", encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("edgekd")
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()


def summarize(
    model: nn.Module, data: DataBundle, task: Task, batch_size: int, what: str = "teacher.model"
) -> ModelSummary:
    """Params, MACs (batch 1, the one counter) and PyTorch eval metrics of a model.

    Raises:
        InputError: the MACs counter (a ``torch.jit`` trace) cannot trace the model; names what it tripped on.
    """
    try:
        cost = count_complexity(model, data.example_input(1))
    except Exception as exc:  # the tracer raises RuntimeError/TypeError/… on whatever it cannot follow
        detail = " ".join(str(exc).split())[:240] or type(exc).__name__
        raise InputError(
            f"{what}: the MACs counter cannot trace the model ({type(exc).__name__}: {detail}); make forward "
            "traceable: tensor outputs, no Python control flow on tensor values"
        ) from exc
    metrics = evaluate_model(model, data.eval_loader(batch_size), task)
    return ModelSummary(params=cost.params, macs=cost.macs, metrics=metrics)


def student_meta(recipe: Recipe, prune: PruneResult | None, distill: TrainResult | None) -> dict[str, Any]:
    """What ``student.pt`` carries besides weights: enough for ``edgekd export student.pt`` to run alone."""
    return {
        "edgekd_version": __version__,
        "recipe": recipe.to_yaml_dict(),
        "prune": to_dict(prune) if prune else None,
        "metrics": distill.metrics if distill else None,
    }


def save_run_student(
    path: Path,
    student: nn.Module,
    recipe: Recipe,
    data: DataBundle,
    prune: PruneResult | None,
    distill: TrainResult | None,
) -> None:
    """Write ``student.pt`` with the metadata that lets ``edgekd export student.pt`` run on its own."""
    from edgekd.models.student_file import save_student

    meta = student_meta(recipe, prune, distill)
    save_student(path, student, recipe.teacher.model, data.num_classes, data.in_channels, meta)


def pt_artifact(path: Path, metrics: dict[str, float]) -> Artifact:
    return Artifact(
        name="student.pt",
        path=path.name,
        format="pt",
        precision="fp32",
        sha256=sha256_file(path),
        size_bytes=path.stat().st_size,
        metrics=metrics,
    )


def compress(recipe: Recipe, out: Path, resume: bool = False, force: bool = False) -> dict[str, Any]:
    """Run the whole pipeline into ``out`` and return the report (as written to ``report.json``).

    Args:
        recipe: the resolved recipe.
        out: the run directory (created if missing).
        resume: continue a killed run in ``out``: finished stages are reused (see :mod:`edgekd.resume`),
            distillation continues from its last epoch checkpoint. Without it, a previous run's state and
            artifacts in ``out`` are removed first.
        force: with ``resume``, accept a recipe that differs from the run's; only affected stages rerun.

    Raises:
        InputError: bad recipe values discovered while building data/models, or a resume with a different
            recipe (exit 2).
        GateError: the student's ONNX parity gate failed (exit 3); earlier artifacts stay, none is half-written.
    """
    if force and not resume:
        raise InputError("--force only applies to --resume (a new run always uses the recipe as given)")
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
        self.teacher = build_teacher(recipe, self.data)
        check_teacher(self.teacher, self.data, self.task)
        teacher_summary, inputs = self.summarize_teacher()
        prune_result, inputs = self.prune(inputs)
        distill_result, student_summary, inputs = self.distill(inputs, prune_result)
        artifacts, inputs = self.export(inputs)
        artifacts = self.profile(inputs, artifacts)
        artifacts.append(pt_artifact(self.run.student_pt, student_summary.metrics))
        gates = [
            Gate(f"parity:{a.name}", a.parity.max_abs_diff, recipe.export.parity_atol, a.parity.passed)
            for a in artifacts
            if a.parity is not None
        ]
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
        write_reports(self.run.root, report, recipe.report.formats)
        log.info("done: %s", self.run.report_md if "md" in recipe.report.formats else self.run.report_json)
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
            }
        )

        def compute(info: dict[str, Any]) -> tuple[list[Path], Any]:
            student = load_run_student(self.pruned_pt, recipe)
            checkpoint, resume = self.state.training_checkpoint("distill", inputs, self.resuming)
            result = distill.run(
                student,
                [self.teacher],
                data,
                self.task,
                recipe.distill,
                recipe.data,
                recipe.seed,
                checkpoint=checkpoint,
                resume=resume,
            )
            info.update(epochs=result.epochs, best_epoch=result.best_epoch, resumed_checkpoint=resume)
            save_run_student(run.student_pt, student, recipe, data, prune_result, result)
            self.student = student
            summary = summarize(
                student, data, self.task, recipe.data.eval_batch_size, "the distilled student"
            )
            return [run.student_pt], {"train": to_dict(result), "student": to_dict(summary)}

        result = self.stage("distill", inputs, compute)
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
            return [run.teacher_onnx, run.student_onnx], to_dict(artifacts)

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


def check_teacher(teacher: nn.Module, data: DataBundle, task: Task) -> None:
    """Fail fast, as bad input naming the layer, when the teacher cannot take the dataset's images.

    Without this, a wrong ``in_channels`` or an output the task cannot read surfaces as a bare shape or type
    error deep inside evaluation.
    """
    from edgekd.prune.layers import forward_or_explain

    out = forward_or_explain(
        teacher.eval(),
        data.example_input(2),
        "teacher.model",
        "check teacher.model (in_channels, num_classes, args) against the dataset",
    )
    try:
        task.output_tensor(out)
    except TypeError as exc:
        raise InputError(
            f"teacher.model: {exc}; return a tensor, a tuple starting with one, or a dict with key 'out'"
        ) from None


def load_run_student(path: Path, recipe: Recipe) -> nn.Module:
    """Load a student edgekd wrote for ``recipe``; a ``module:factory`` spec is trusted only if the recipe names it.

    A factory spec imports and runs code. The recipe naming the same spec is the user's opt-in (the teacher
    was built from it already); a file naming any other factory is refused by ``load_student``.
    """
    from edgekd.models.student_file import load_student, read_student_meta

    stored = read_student_meta(path).get("recipe", {}).get("teacher", {}).get("model")
    return load_student(path, trust=stored == recipe.teacher.model.model_dump(mode="json"))


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
