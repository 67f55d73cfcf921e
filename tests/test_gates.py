"""Deploy gates: the recipe section's validation and each gate's evaluation on result records.

The records are the frozen result dataclasses the pipeline produces (written out here with the numbers a run
would give); the end-to-end exit code 3 of ``compress`` is tested with the CLI.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edgekd.errors import EdgekdError, GateError, InputError
from edgekd.recipe.gates import GatesConfig
from edgekd.report.gates import evaluate_gates, raise_if_failed
from edgekd.results import Artifact, LatencyStats, Parity, Profile
from edgekd.tasks import get_task


def profile(target: str, threads: int, p50: float, requested: int | None = None) -> Profile:
    lat = LatencyStats(
        p50=p50, p90=p50 * 1.2, p99=p50 * 1.5, mean=p50, std=0.01, min=p50 * 0.9, first=p50 * 3
    )
    device = {"threads_requested": threads if requested is None else requested}
    return Profile(target, device, threads, 1, lat, load_ms=5.0, peak_rss_mb=3.0, runs=100)


def artifact(name: str, accuracy: float, size: int, profiles: tuple[Profile, ...]) -> Artifact:
    precision = "int8" if "int8" in name else "fp32"
    return Artifact(name, name, "onnx", precision, "0" * 64, size, None, {"accuracy": accuracy}, profiles)


ARTIFACTS = [
    artifact("teacher.onnx", 0.93, 1_100_000, (profile("local", 1, 0.60), profile("local", 2, 0.40, 0))),
    artifact("student.onnx", 0.92, 290_000, (profile("local", 1, 0.30), profile("local", 2, 0.28, 0))),
    artifact(
        "student.int8.onnx",
        0.905,
        120_000,
        (profile("local", 1, 0.20), profile("local", 2, 0.19, 0), profile("pi5", 4, 2.5, 0)),
    ),
]
TASK = get_task("classification")


def names(gates) -> dict[str, bool]:
    return {g.name: g.passed for g in gates}


def test_no_gates_configured_evaluates_nothing():
    assert evaluate_gates(GatesConfig(), ARTIFACTS, TASK) == []


def test_every_gate_kind_on_the_shipped_int8_file():
    cfg = GatesConfig(
        artifact="student.int8.onnx",
        max_latency_ms={"target": "local", "p50": 0.25, "p99": 0.29},
        max_metric_drop={"accuracy": 0.02},
        max_size_mb=0.1,
        min_speedup=2.5,
    )
    gates = evaluate_gates(cfg, ARTIFACTS, TASK)
    assert names(gates) == {
        "max_latency_ms:student.int8.onnx@local:threads=1:batch=1:p50": True,  # 0.20
        "max_latency_ms:student.int8.onnx@local:threads=1:batch=1:p99": False,  # 0.30
        "max_latency_ms:student.int8.onnx@local:threads=2:batch=1:p50": True,
        "max_latency_ms:student.int8.onnx@local:threads=2:batch=1:p99": True,  # 0.285
        "max_metric_drop:student.int8.onnx:accuracy": False,  # 0.93 - 0.905 = 0.025 > 0.02
        "max_size_mb:student.int8.onnx": False,  # 0.114 MiB
        "min_speedup:student.int8.onnx@local:threads=1:batch=1": True,  # 3.0
        "min_speedup:student.int8.onnx@local:threads=2:batch=1": False,  # 2.1
    }
    drop = next(g for g in gates if g.name.startswith("max_metric_drop"))
    assert drop.value == pytest.approx(0.025) and drop.limit == 0.02
    with pytest.raises(
        GateError, match=r"4 of 8 deploy gate\(s\) failed: .*max_size_mb:student\.int8\.onnx = 0\.1144"
    ):
        raise_if_failed(gates)


def test_latency_gate_on_one_thread_count_of_a_remote_target():
    cfg = GatesConfig(artifact="student.int8.onnx", max_latency_ms={"target": "pi5", "threads": 0, "p50": 3})
    assert names(evaluate_gates(cfg, ARTIFACTS, TASK)) == {
        "max_latency_ms:student.int8.onnx@pi5:threads=4:batch=1:p50": True
    }
    raise_if_failed(evaluate_gates(cfg, ARTIFACTS, TASK))  # all passed: no error


def test_metric_drop_of_a_lower_is_better_metric_counts_an_increase():
    class Regression:
        higher_is_better = False

    arts = [artifact("teacher.onnx", 0.10, 1, ()), artifact("student.onnx", 0.13, 1, ())]
    (gate,) = evaluate_gates(GatesConfig(max_metric_drop={"accuracy": 0.02}), arts, Regression())
    assert gate.value == pytest.approx(0.03) and not gate.passed


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"artifact": "student.fp16.onnx", "max_size_mb": 1}, r"student\.fp16\.onnx was not produced"),
        ({"max_latency_ms": {"target": "jetson", "p90": 5}}, r"no profile on target 'jetson'"),
        ({"max_metric_drop": {"miou": 0.01}}, r"'miou' is not measured"),
        ({"min_speedup": 2, "artifact": "student.onnx"}, None),
    ],
)
def test_gates_that_cannot_be_evaluated_say_why(cfg, message):
    arts = ARTIFACTS if message else [ARTIFACTS[1]]
    with pytest.raises(
        EdgekdError, match=message or r"no setting where both teacher\.onnx and student\.onnx"
    ):
        evaluate_gates(GatesConfig(**cfg), arts, TASK)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"artifact": "teacher.onnx"}, "artifact must be one of"),
        ({"max_latency_ms": {"target": "local"}}, "at least one of p50, p90, p99"),
        ({"max_latency_ms": {"target": "local", "p95": 3}}, "Extra inputs"),
        ({"max_metric_drop": {"accuracy": -0.1}}, "must be >= 0"),
        ({"max_size_mb": 0}, "greater than 0"),
    ],
)
def test_bad_gate_config_is_rejected(cfg, message):
    with pytest.raises(ValidationError, match=message):
        GatesConfig(**cfg)


# ------------------------------------------------------------------------------- recipe and pipeline glue
def _recipe(**sections):
    from edgekd.recipe.schema import Recipe

    return Recipe(teacher={"model": {"name": "resnet20"}}, **sections)


def test_export_precisions_accept_true_false_and_settings():
    assert _recipe().export.int8 is None and _recipe().export.fp16 is None
    recipe = _recipe(export={"int8": True, "fp16": {"atol": 0.2}})
    assert recipe.export.int8.calibration_samples == 256 and recipe.export.fp16.atol == 0.2
    assert _recipe(export={"int8": False}).export.int8 is None


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"gates": {"artifact": "student.int8.onnx"}}, "export.int8 is not enabled"),
        ({"gates": {"max_latency_ms": {"target": "pi5", "p90": 20}}}, "'pi5' is not in profile.targets"),
    ],
)
def test_gates_on_what_the_recipe_does_not_produce_fail_at_load(sections, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        _recipe(**sections)


def test_parity_gates_use_agreement_for_int8_and_the_fp16_tolerance():
    from edgekd.recipe.schema import ExportConfig
    from edgekd.report.gates import parity_gates

    def with_parity(name: str, precision: str, diff: float, agreement: float) -> Artifact:
        return Artifact(name, name, "onnx", precision, "0" * 64, 1, Parity(diff, agreement, True, 256))

    arts = [
        with_parity("student.onnx", "fp32", 2e-6, 1.0),
        with_parity("student.int8.onnx", "int8", 0.3, 0.98),
        with_parity("student.fp16.onnx", "fp16", 0.004, 1.0),
    ]
    gates = {g.name: g for g in parity_gates(arts, ExportConfig(int8=True, fp16={"atol": 0.05}))}
    assert gates["parity:student.onnx"].limit == 1e-3
    assert gates["parity_agreement:student.int8.onnx"].value == 0.98
    assert gates["parity_agreement:student.int8.onnx"].limit == 0.97
    assert gates["parity:student.fp16.onnx"].limit == 0.05
    assert all(g.passed for g in gates.values())


def test_profile_max_ms_parsing():
    from edgekd.report.gates import parse_latency_limits

    (gate,) = parse_latency_limits(["p90=20", "p50=5"], ["local"])
    assert (gate.target, gate.p50, gate.p90, gate.p99) == ("local", 5.0, 20.0, None)
    assert parse_latency_limits([], ["local"]) == []
    for bad in ("p95=3", "p90=", "p90=-1", "20"):
        with pytest.raises(InputError, match="--max-ms"):
            parse_latency_limits([bad], ["local"])
