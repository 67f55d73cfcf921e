"""Assemble report.json (schema_version 1) from the results the stages returned.

The report stage sees only result dataclasses (``edgekd.results``), never models or sessions, so a report can
be rebuilt from ``state/*.json`` without rerunning anything. Two derived blocks answer what users ask:

* ``compression.metric_delta`` compares what ships: the ORT-evaluated student artifact against the
  ORT-evaluated teacher artifact (PyTorch numbers only as a declared fallback, per metric, see
  ``compression.metric_source``).
* ``speedup`` puts the measured latency ratio beside the MACs ratio for every (target, threads, batch), which
  is the answer to "MACs dropped 4x but latency only 1.8x": ``realized`` is the fraction of the theoretical
  speed-up that the runtime delivered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import PurePath
from typing import Any

from edgekd.errors import InputError
from edgekd.report.deploy import InputSpec
from edgekd.report.environment import edgekd_version, environment
from edgekd.report.schema import SCHEMA_VERSION
from edgekd.results import Artifact, Gate, ModelSummary, PruneResult, TrainResult, to_dict
from edgekd.rundir import STUDENT_ONNX, TEACHER_ONNX

ORT = "onnxruntime"
PYTORCH = "pytorch"
PARITY_KIND = "parity"  # gates[].kind of the automatic PyTorch-vs-ORT checks every shipped file went through
GATE_KIND = "gate"  # gates[].kind of the release criteria the recipe's ``gates:`` section set


@dataclass(frozen=True)
class ReportInputs:
    """Everything report.json is built from: the stages' results, the gates and the stage timings.

    Why one object: the report takes eleven things from as many stages; as fields they are named once, a new
    report input is one field rather than one more parameter at every call, and the set is plain data, so a
    report can be rebuilt from ``state/*.json`` alone.

    Attributes:
        recipe: The resolved recipe (``Recipe.to_yaml_dict()``).
        task: ``classification`` | ``segmentation`` | ``regression``.
        teacher: Teacher size, MACs and PyTorch eval metrics.
        student: Final student size, MACs and PyTorch eval metrics.
        prune: The pruning result, or ``None`` when pruning was skipped.
        distill: The distillation result, or ``None`` when distillation was skipped.
        artifacts: Every shipped file, including the teacher artifact used for side-by-side numbers.
        gates: Deploy gates (the recipe's ``gates:``) and whether they passed.
        stages: ``{stage: {"seconds": float, ...}}`` in execution order.
        teacher_artifact_name: Artifact (name or file name) holding the teacher's ORT metrics and profiles.
        student_artifact_name: Artifact holding the FP32 student's ORT metrics and profiles.
        parity: The automatic parity checks of the shipped files (``gates[]`` entries of kind ``parity``).
        input: How to feed the shipped student file (report.json ``input``), or ``None`` when unknown.
        precision: The recommended precision per profiled setting (:mod:`edgekd.report.precision`), or
            ``None`` when only the FP32 student was shipped.
    """

    recipe: dict[str, Any]
    task: str
    teacher: ModelSummary
    student: ModelSummary
    prune: PruneResult | None
    distill: TrainResult | None
    artifacts: Sequence[Artifact]
    gates: Sequence[Gate]
    stages: Mapping[str, Mapping[str, Any]]
    teacher_artifact_name: str = TEACHER_ONNX
    student_artifact_name: str = STUDENT_ONNX
    parity: Sequence[Gate] = ()
    input: InputSpec | None = None
    precision: list[dict[str, Any]] | None = None


def build_report(inputs: ReportInputs) -> dict[str, Any]:
    """Build the report.json dict. Validate it with :func:`edgekd.report.validate_report` before writing.

    Args:
        inputs: The stage results, gates and timings (see :class:`ReportInputs`).

    Returns:
        The report dict: every docs/run-directory.md key plus ``pruning``, ``distillation``, ``speedup``, ``notes``,
        ``input``; ``gates[]`` lists the parity checks, then the deploy gates, each with its ``kind``.

    Raises:
        InputError: the teacher has zero MACs or params, or a stage entry has no ``seconds``.
    """
    teacher, student, artifacts = inputs.teacher, inputs.student, list(inputs.artifacts)
    if teacher.macs <= 0 or teacher.params <= 0:
        raise InputError(
            f"teacher has {teacher.macs} MACs and {teacher.params} params; both must be positive"
        )
    for stage, entry in inputs.stages.items():
        if "seconds" not in entry:
            raise InputError(f"stage '{stage}' has no 'seconds' entry; every stage must report its duration")

    teacher_art = find_artifact(artifacts, inputs.teacher_artifact_name)
    student_art = find_artifact(artifacts, inputs.student_artifact_name)
    delta, source, used, delta_notes = _metric_delta(teacher, student, teacher_art, student_art)
    notes = [f"{a.name}: {note}" for a in artifacts for note in a.notes] + delta_notes

    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "edgekd_version": edgekd_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": inputs.task,
        "recipe": inputs.recipe,
        "environment": environment(),
        "models": {"teacher": to_dict(teacher), "student": to_dict(student)},
        "compression": {
            "macs_reduction": 1.0 - student.macs / teacher.macs,
            "params_reduction": 1.0 - student.params / teacher.params,
            "metric_delta": delta,
            "metric_source": source,
            "metrics_compared": used,
            "macs_ratio": teacher.macs / student.macs if student.macs else None,
            "teacher_artifact": teacher_art.name if teacher_art else None,
            "student_artifact": student_art.name if student_art else None,
        },
        "artifacts": [to_dict(a) for a in artifacts],
        "gates": [{**to_dict(g), "kind": PARITY_KIND} for g in inputs.parity]
        + [{**to_dict(g), "kind": GATE_KIND} for g in inputs.gates],
        "stages": {name: dict(entry) for name, entry in inputs.stages.items()},
        "pruning": _pruning(inputs.prune),
        "distillation": to_dict(inputs.distill) if inputs.distill is not None else None,
        "speedup": speedup_table(artifacts, teacher_art, teacher.macs, student.macs),
        "notes": notes,
        "input": inputs.input.as_report() if inputs.input is not None else None,
        "precision": inputs.precision,
    }
    return report


def find_artifact(artifacts: Sequence[Artifact], name: str) -> Artifact | None:
    """The artifact called ``name`` (its ``name`` or the file name of its ``path``), if any."""
    for artifact in artifacts:
        if name in (artifact.name, PurePath(artifact.path).name):
            return artifact
    return None


def _metric_delta(
    teacher: ModelSummary, student: ModelSummary, teacher_art: Artifact | None, student_art: Artifact | None
) -> tuple[dict[str, float], dict[str, str], dict[str, dict[str, float]], list[str]]:
    """Per metric: student - teacher, both from ORT when both artifacts have it, else both from PyTorch.

    Never mixes sources within one metric: an ORT student against a PyTorch teacher would fold export error
    into the "compression cost".
    """
    t_ort = teacher_art.metrics if teacher_art else {}
    s_ort = student_art.metrics if student_art else {}
    names = list(dict.fromkeys([*student.metrics, *s_ort]))
    delta: dict[str, float] = {}
    source: dict[str, str] = {}
    used: dict[str, dict[str, float]] = {"teacher": {}, "student": {}}
    fallback: list[str] = []
    for name in names:
        if name in t_ort and name in s_ort:
            t, s, source[name] = t_ort[name], s_ort[name], ORT
        elif name in teacher.metrics and name in student.metrics:
            t, s, source[name] = teacher.metrics[name], student.metrics[name], PYTORCH
            fallback.append(name)
        else:
            continue
        delta[name] = s - t
        used["teacher"][name] = t
        used["student"][name] = s
    notes = []
    if fallback:
        notes.append(
            f"metric_delta for {', '.join(fallback)} uses PyTorch metrics: no ONNX Runtime evaluation of "
            "both the teacher and the student artifact"
        )
    return delta, source, used, notes


def _pruning(prune: PruneResult | None) -> dict[str, Any] | None:
    if prune is None:
        return None
    data = to_dict(prune)
    data["macs_reduction"] = prune.macs_reduction
    data["params_reduction"] = prune.params_reduction
    for layer in data["layers"]:
        layer["kept"] = layer["after"] / layer["before"] if layer["before"] else 1.0
    return data


def speedup_table(
    artifacts: Sequence[Artifact], teacher_art: Artifact | None, teacher_macs: int, student_macs: int
) -> list[dict[str, Any]]:
    """Measured speed-up of every other artifact over the teacher artifact, beside the MACs ratio.

    One row per artifact and (target, threads, batch) that both it and the teacher were profiled at.
    ``realized = speedup / macs_ratio``: 1.0 means latency fell exactly as much as MACs did; well below 1.0
    means the runtime is bound by something MACs do not count (memory traffic, per-op overhead, threading).
    """
    if teacher_art is None or not student_macs:
        return []
    macs_ratio = teacher_macs / student_macs
    rows = []
    for artifact in artifacts:
        if artifact is teacher_art:
            continue
        for p, teacher_p50, speedup in artifact.speedups_over(teacher_art):
            rows.append(
                {
                    "artifact": artifact.name,
                    "target": p.target,
                    "threads": p.threads,
                    "batch": p.batch,
                    "teacher_p50_ms": teacher_p50,
                    "student_p50_ms": p.latency_ms.p50,
                    "speedup": speedup,
                    "macs_ratio": macs_ratio,
                    "realized": speedup / macs_ratio,
                }
            )
    return rows
