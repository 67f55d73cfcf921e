"""The report.json contract (schema_version 1) as pydantic models, and its validator.

Why pydantic: report.json is read by users' CI, benchmarks and ``edgekd report``; a JSON Schema generated from
the same models that validate it cannot drift from the check. Every model allows extra keys (docs/run-directory.md:
"add keys freely, never rename or drop one"), is strict about types (a string where a number belongs, or a
bool posing as a number, is an error) and refuses NaN/inf, which are not JSON.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgekd.errors import InputError

SCHEMA_VERSION = 1
FRACTION_METRICS = frozenset({"accuracy", "top5", "miou", "dice", "pixel_accuracy"})
"""Metrics that are fractions in [0, 1] (docs/run-directory.md metric names); shown as percentages."""

_SHA256 = re.compile(r"[0-9a-f]{64}")

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
NonNegative = Annotated[float, Field(ge=0.0)]
Count = Annotated[int, Field(ge=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


def _check_metrics(metrics: dict[str, float]) -> dict[str, float]:
    for name, value in metrics.items():
        if name in FRACTION_METRICS and not 0.0 <= value <= 1.0:
            raise ValueError(f"metric '{name}' is a fraction and must be in [0, 1], got {value}")
    return metrics


class ModelEntry(_Model):
    params: Count
    macs: Count
    metrics: dict[str, float]  # eval (test) split, measured once
    val_metrics: dict[str, float] = {}  # validation split: what training selected on

    _metrics = field_validator("metrics", "val_metrics")(_check_metrics)


class Models(_Model):
    teacher: ModelEntry
    student: ModelEntry


class Compression(_Model):
    macs_reduction: Fraction
    params_reduction: Fraction
    metric_delta: dict[str, float]


class Environment(_Model):
    python: str
    torch: str | None
    torch_pruning: str | None
    onnx: str | None
    onnxruntime: str | None
    platform: str
    cpu: str
    cores: Annotated[int, Field(ge=1)]


class ParityEntry(_Model):
    max_abs_diff: NonNegative
    agreement: Fraction
    passed: bool


class LatencyEntry(_Model):
    p50: NonNegative
    p90: NonNegative
    p99: NonNegative
    mean: NonNegative
    std: NonNegative
    min: NonNegative
    first: NonNegative

    @model_validator(mode="after")
    def _ordered(self) -> LatencyEntry:
        if not self.min <= self.p50 <= self.p90 <= self.p99:
            raise ValueError(
                f"latency percentiles must satisfy min <= p50 <= p90 <= p99, got "
                f"{self.min} / {self.p50} / {self.p90} / {self.p99}"
            )
        return self


class PredictedEntry(_Model):
    p50: NonNegative


class ProfileEntry(_Model):
    target: str
    device: dict[str, Any]
    threads: Annotated[int, Field(ge=0)]
    batch: Annotated[int, Field(ge=1)]
    latency_ms: LatencyEntry
    load_ms: NonNegative
    peak_rss_mb: NonNegative
    runs: Annotated[int, Field(ge=1)]
    # an addition (docs/run-directory.md): the target's cached latency model's prediction, when one is valid
    predicted_ms: PredictedEntry | None = None


class ArtifactEntry(_Model):
    name: str
    path: str
    format: Literal["onnx", "pt"]
    precision: Literal["fp32", "fp16", "int8"]
    sha256: str
    size_bytes: Count
    parity: ParityEntry | None  # the key is required; null when the file has no PyTorch reference
    metrics: dict[str, float]
    profiles: list[ProfileEntry]

    _metrics = field_validator("metrics")(_check_metrics)

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not _SHA256.fullmatch(value):
            raise ValueError(f"sha256 must be 64 lowercase hex characters, got {value!r}")
        return value


class GateEntry(_Model):
    name: str
    value: float
    limit: float
    passed: bool
    # "parity": an automatic PyTorch-vs-ORT check of a shipped file; "gate": a release criterion the recipe set.
    # Optional: reports written before the two were told apart have no kind.
    kind: Literal["parity", "gate"] | None = None


class PreprocessingEntry(_Model):
    preset: str | None
    mean: Annotated[list[float], Field(min_length=1)]
    std: Annotated[list[Annotated[float, Field(gt=0.0)]], Field(min_length=1)]
    formula: str
    # where mean/std came from (data.preprocessing) and why, in words; absent in older reports
    source: Literal["preset", "declared", "measured", "teacher", "dataset"] | None = None
    detail: str | None = None

    @model_validator(mode="after")
    def _per_channel(self) -> PreprocessingEntry:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} channels but std has {len(self.std)}")
        return self


class InputEntry(_Model):
    """How to feed the shipped file (``input``); ``classes`` for classification/segmentation, ``outputs`` for
    regression (output name → meaning)."""

    name: str
    shape: Annotated[list[Annotated[int, Field(ge=0)] | str], Field(min_length=1)]
    dtype: str
    layout: Literal["NCHW", "NHWC"]
    preprocessing: PreprocessingEntry
    classes: list[str] | None = None
    outputs: dict[str, str] | None = None

    @model_validator(mode="after")
    def _readout(self) -> InputEntry:
        if (self.classes is None) == (self.outputs is None):
            raise ValueError("input needs exactly one of 'classes' (class names) or 'outputs' (regression)")
        channels = self.shape[1] if len(self.shape) > 1 and self.layout == "NCHW" else None
        if isinstance(channels, int) and len(self.preprocessing.mean) not in (1, channels):
            raise ValueError(
                f"preprocessing has {len(self.preprocessing.mean)} channels but the input has {channels}"
            )
        return self


class DataFreeEntry(_Model):
    """``stages.distill.data_free``: distillation used no training image; the synthesis it spent instead."""

    method: str
    synthetic_samples: int = Field(ge=0)
    seconds: NonNegative


class StageEntry(_Model):
    seconds: NonNegative
    data_free: DataFreeEntry | None = None  # distill only, when distill.data_free replaced the training split


class CalibrationError(_Model):
    within_10pct: Fraction | None  # null when no held-out model was measured (an ONNX file as the source)
    mape: NonNegative | None


class CalibrateEntry(StageEntry):
    """``stages.calibrate``: written when a run builds a latency model (edgekd.latency)."""

    target: str
    samples: Count
    error: CalibrationError


class Report(_Model):
    """report.json, schema_version 1: the keys docs/run-directory.md requires (extra keys are allowed)."""

    schema_version: Literal[1]
    edgekd_version: str
    created: str
    task: Literal["classification", "segmentation", "regression"]
    recipe: dict[str, Any]
    environment: Environment
    models: Models
    compression: Compression
    artifacts: list[ArtifactEntry]
    gates: list[GateEntry]
    stages: dict[str, StageEntry]
    # an addition (docs/run-directory.md): older reports have none; null when the run shipped no student.onnx
    input: InputEntry | None = None

    @field_validator("stages")
    @classmethod
    def _calibrate(cls, stages: dict[str, StageEntry]) -> dict[str, StageEntry]:
        if "calibrate" in stages:  # the one stage entry with required keys besides seconds
            try:
                CalibrateEntry.model_validate(stages["calibrate"].model_dump())
            except ValidationError as exc:
                err = exc.errors(include_url=False)[0]
                where = "calibrate." + ".".join(str(p) for p in err["loc"])
                raise ValueError(f"{where}: {err['msg']}") from None
        return stages

    @field_validator("created")
    @classmethod
    def _iso8601(cls, value: str) -> str:
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"created must be an ISO 8601 timestamp, got {value!r}") from None
        return value


def report_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of report.json schema_version 1, generated from the validating models."""
    schema = Report.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "edgekd report.json (schema_version 1)"
    return schema


def validate_report(report: Any) -> None:
    """Check ``report`` against the report.json contract; return quietly when it holds.

    Raises:
        InputError: naming the first missing key path (``artifacts[1].parity.agreement``) or the first bad
            value, in one line.

    >>> validate_report({"schema_version": 1})
    Traceback (most recent call last):
    ...
    edgekd.errors.InputError: report.json is missing required key 'edgekd_version'; regenerate it with edgekd
    """
    if not isinstance(report, dict):
        raise InputError(f"report.json must hold a JSON object, got {type(report).__name__}")
    version = report.get("schema_version")
    if "schema_version" in report and version != SCHEMA_VERSION:
        raise InputError(
            f"report.json has schema_version {version!r}; this edgekd reads schema_version {SCHEMA_VERSION} "
            "(regenerate the report with this version)"
        )
    try:
        Report.model_validate(report)
    except ValidationError as exc:
        raise InputError(_first_error(exc)) from None


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    missing = [e for e in errors if e["type"] == "missing"]
    err = (missing or errors)[0]
    path = _key_path(err["loc"])
    if err["type"] == "missing":
        return f"report.json is missing required key '{path}'; regenerate it with edgekd"
    value = err.get("input")
    shown = (
        repr(value) if isinstance(value, str | int | float | bool) or value is None else type(value).__name__
    )
    if isinstance(value, float) and not math.isfinite(value):
        shown = str(value)
    message = err["msg"].removeprefix("Value error, ")
    return f"report.json key '{path}' is invalid: {message} (got {shown[:80]})"


def _key_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "<root>"
