"""The recipe's ``gates:`` section: release criteria a finished run is judged by (see :mod:`edgekd.report.gates`).

Kept beside :mod:`edgekd.recipe.schema` (which includes it as ``Recipe.gates``) because it is a whole concept
of its own: what a CI job may refuse to ship.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgekd.rundir import SHIPPABLE, STUDENT_ONNX


class LatencyGate(BaseModel):
    """``max_latency_ms: {target: pi5, p90: 20}``: every profile of the gated artifact on ``target`` (or only
    the one at ``threads``, as written in ``profile.threads``) must stay at or under each given percentile."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str = Field(
        "local", description="A target of profile.targets (name, ssh:// URL or named target)."
    )
    threads: int | None = Field(None, ge=0, description="Only this requested thread count (0 = all cores).")
    p50: float | None = Field(None, gt=0, description="Largest accepted median latency, ms.")
    p90: float | None = Field(None, gt=0, description="Largest accepted 90th-percentile latency, ms.")
    p99: float | None = Field(None, gt=0, description="Largest accepted 99th-percentile latency, ms.")

    @model_validator(mode="after")
    def _some_limit(self) -> LatencyGate:
        if self.p50 is None and self.p90 is None and self.p99 is None:
            raise ValueError("give at least one of p50, p90, p99 (milliseconds)")
        return self


class GatesConfig(BaseModel):
    """Deploy gates; a failed gate makes ``compress`` exit 3 after writing every file and report."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    artifact: str = Field(
        STUDENT_ONNX, description=f"The file the gates judge: one of {', '.join(SHIPPABLE)}."
    )
    max_latency_ms: LatencyGate | None = Field(None, description="Latency budget on one target.")
    max_metric_drop: dict[str, float] = Field(
        default_factory=dict, description="Per metric, the largest accepted teacher - artifact (both ORT)."
    )
    max_size_mb: float | None = Field(None, gt=0, description="Largest accepted file size, MiB.")
    min_speedup: float | None = Field(
        None, gt=0, description="Smallest accepted teacher p50 / artifact p50, on every profiled setting."
    )

    @model_validator(mode="after")
    def _check(self) -> GatesConfig:
        if self.artifact not in SHIPPABLE:
            raise ValueError(f"artifact must be one of {', '.join(SHIPPABLE)}, got {self.artifact!r}")
        if any(v < 0 for v in self.max_metric_drop.values()):
            raise ValueError("max_metric_drop limits must be >= 0 (a drop of 0.01 = one point of accuracy)")
        return self

    @property
    def configured(self) -> bool:
        """Whether any gate is set (an empty section gates nothing)."""
        return bool(
            self.max_latency_ms or self.max_metric_drop or self.max_size_mb is not None or self.min_speedup
        )
