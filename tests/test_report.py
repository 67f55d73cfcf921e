"""The report stage: report.json contract, markdown/HTML/plots, and re-rendering from a run directory."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from edgekd.data.fashion_mnist import CLASS_NAMES
from edgekd.errors import InputError
from edgekd.io import TMP_MARK
from edgekd.report import (
    InputSpec,
    ReportInputs,
    build_report,
    environment,
    render,
    report_json_schema,
    validate_report,
    write_reports,
)
from edgekd.report.view import headline
from edgekd.results import (
    Artifact,
    EpochLog,
    Gate,
    LatencyStats,
    LayerChannels,
    ModelSummary,
    Parity,
    Profile,
    PruneResult,
    TrainResult,
)

# Numbers below are those of a resnet20 teacher on Fashion-MNIST pruned by ~74 % MACs (1x28x28 input).
TEACHER = ModelSummary(params=272_282, macs=31_220_224, metrics={"accuracy": 0.9231, "top5": 0.9987})
STUDENT = ModelSummary(params=75_210, macs=8_103_552, metrics={"accuracy": 0.9118, "top5": 0.9981})
DEVICE = {"cpu": "Intel(R) Xeon(R) Processor", "cores": 2}
CLASSES = CLASS_NAMES  # Fashion-MNIST's
INPUT = InputSpec(
    "student.onnx", "input", ("batch", 1, 28, 28), "float32", (0.286,), (0.353,), classes=CLASSES
)


def _profile(threads: int, p50: float, spread: float = 0.12) -> Profile:
    stats = LatencyStats(
        p50=p50,
        p90=p50 * (1 + spread),
        p99=p50 * (1 + 2.5 * spread),
        mean=p50 * 1.03,
        std=p50 * 0.05,
        min=p50 * 0.93,
        first=p50 * 4.1,
    )
    return Profile("local", DEVICE, threads, 1, stats, load_ms=18.4, peak_rss_mb=112.7, runs=640)


def _layers() -> tuple[LayerChannels, ...]:
    layers = [LayerChannels("conv1", "Conv2d", 16, 8)]
    for stage, width in ((1, 16), (2, 32), (3, 64)):
        for block in range(3):
            for conv in (1, 2):
                kept = max(4, int(width * (0.45 if conv == 1 else 0.55)))
                layers.append(LayerChannels(f"layer{stage}.{block}.conv{conv}", "Conv2d", width, kept))
    return tuple(layers)


def _artifacts() -> list[Artifact]:
    teacher = Artifact(
        name="teacher.onnx",
        path="teacher.onnx",
        format="onnx",
        precision="fp32",
        sha256="3f" * 32,
        size_bytes=1_103_870,
        parity=Parity(max_abs_diff=2.1e-6, agreement=1.0, passed=True, samples=256),
        metrics={"accuracy": 0.9230, "top5": 0.9987},
        profiles=(_profile(1, 1.92), _profile(0, 1.21)),
    )
    student = Artifact(
        name="student.onnx",
        path="student.onnx",
        format="onnx",
        precision="fp32",
        sha256="a1b2c3d4" * 8,
        size_bytes=318_402,
        parity=Parity(max_abs_diff=3.4e-6, agreement=1.0, passed=True, samples=256),
        metrics={"accuracy": 0.9116, "top5": 0.9981},
        profiles=(_profile(1, 0.81), _profile(0, 0.66)),
        notes=("onnxsim failed (shape inference error); kept the unsimplified graph",),
    )
    return [teacher, student]


def _history() -> tuple[EpochLog, ...]:
    accs = (0.842, 0.889, 0.9118)
    return tuple(
        EpochLog(
            e, 1.41 - 0.3 * e, {"ce": 0.52 - 0.1 * e, "kd": 1.31 - 0.25 * e}, {"accuracy": a}, 0.02 / e, 31.5
        )
        for e, a in enumerate(accs, start=1)
    )


def make_report(**overrides: object) -> dict:
    kwargs: dict = {
        "recipe": {
            "task": "classification",
            "teacher": {"model": {"name": "resnet20"}},
            "report": {"title": None},
        },
        "task": "classification",
        "teacher": TEACHER,
        "student": STUDENT,
        "prune": PruneResult(
            importance="group_l2",
            target="macs",
            reduction_goal=0.74,
            macs_before=TEACHER.macs,
            macs_after=STUDENT.macs,
            params_before=TEACHER.params,
            params_after=STUDENT.params,
            steps=8,
            layers=_layers(),
            seconds=4.2,
        ),
        "distill": TrainResult(
            epochs=3, best_epoch=3, metrics={"accuracy": 0.9118}, history=_history(), seconds=94.6
        ),
        "artifacts": _artifacts(),
        "gates": [Gate("parity_max_abs_diff", 3.4e-6, 1e-3, True), Gate("accuracy_drop", 0.0114, 0.02, True)],
        "stages": {
            "prune": {"seconds": 4.2},
            "distill": {"seconds": 94.6},
            "export": {"seconds": 3.1, "opset": 18},
        },
        "input": INPUT,
    }
    kwargs.update(overrides)
    return build_report(ReportInputs(**kwargs))


@pytest.fixture(scope="module")
def report() -> dict:
    return make_report()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory, report: dict) -> tuple[Path, list[Path]]:
    run_dir = tmp_path_factory.mktemp("run")
    return run_dir, write_reports(run_dir, report, ["json", "md", "html"])


# --------------------------------------------------------------------------------------- report.json contract


def test_built_report_is_valid_json_and_passes_validation(report: dict) -> None:
    validate_report(report)
    assert json.loads(json.dumps(report, allow_nan=False)) == report
    assert report["schema_version"] == 1 and report["task"] == "classification"
    assert set(environment()) >= {
        "python",
        "torch",
        "torch_pruning",
        "onnx",
        "onnxruntime",
        "platform",
        "cpu",
        "cores",
    }


def test_compression_compares_ort_artifacts_not_pytorch(report: dict) -> None:
    comp = report["compression"]
    assert comp["macs_reduction"] == pytest.approx(1 - 8_103_552 / 31_220_224)
    assert comp["params_reduction"] == pytest.approx(1 - 75_210 / 272_282)
    assert comp["metric_delta"]["accuracy"] == pytest.approx(0.9116 - 0.9230)  # ORT, not 0.9118 - 0.9231
    assert comp["metric_source"] == {"accuracy": "onnxruntime", "top5": "onnxruntime"}


def test_metric_delta_falls_back_to_pytorch_and_says_so() -> None:
    arts = _artifacts()
    arts[0] = Artifact(**{**arts[0].__dict__, "metrics": {}})  # teacher artifact was never evaluated in ORT
    rep = make_report(artifacts=arts)
    assert rep["compression"]["metric_delta"]["accuracy"] == pytest.approx(0.9118 - 0.9231)
    assert rep["compression"]["metric_source"]["accuracy"] == "pytorch"
    assert any("uses PyTorch metrics" in n for n in rep["notes"])


def test_speedup_is_per_thread_count_beside_macs_ratio(report: dict) -> None:
    rows = {r["threads"]: r for r in report["speedup"]}
    assert set(rows) == {1, 0}
    assert rows[1]["speedup"] == pytest.approx(1.92 / 0.81)
    assert rows[0]["macs_ratio"] == pytest.approx(31_220_224 / 8_103_552)
    assert rows[0]["realized"] == pytest.approx((1.21 / 0.66) / (31_220_224 / 8_103_552))


REQUIRED = [
    "schema_version",
    "edgekd_version",
    "created",
    "task",
    "recipe",
    "environment",
    "environment.cores",
    "environment.onnxruntime",
    "models.teacher",
    "models.student.macs",
    "models.teacher.metrics",
    "compression.macs_reduction",
    "compression.metric_delta",
    "artifacts",
    "artifacts[0].sha256",
    "artifacts[1].parity",
    "artifacts[1].parity.agreement",
    "artifacts[0].metrics",
    "artifacts[1].profiles[0].latency_ms.p99",
    "artifacts[1].profiles[1].peak_rss_mb",
    "artifacts[0].profiles[0].device",
    "gates",
    "gates[1].passed",
    "stages",
    "stages.distill.seconds",
    "input.name",
    "input.shape",
    "input.layout",
    "input.preprocessing.mean",
    "input.preprocessing.std",
]


def _drop(report: dict, path: str) -> dict:
    broken = copy.deepcopy(report)
    parts = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]
    node = broken
    for part in parts[:-1]:
        node = node[part]
    del node[parts[-1]]
    return broken


@pytest.mark.parametrize("path", REQUIRED)
def test_removing_a_required_key_fails_naming_it(report: dict, path: str) -> None:
    with pytest.raises(InputError, match=f"missing required key '{re.escape(path)}'"):
        validate_report(_drop(report, path))


@pytest.mark.parametrize(
    ("path", "value", "expect"),
    [
        ("artifacts[1].profiles[0].latency_ms.p50", 99.0, "p50 <= p90"),
        ("artifacts[0].sha256", "not-a-hash", "64 lowercase hex"),
        ("artifacts[0].precision", "bf16", "precision"),
        ("artifacts[1].metrics.accuracy", 1.5, "fraction"),
        ("compression.macs_reduction", 1.2, "macs_reduction"),
        ("models.teacher.params", "272k", "models.teacher.params"),
        ("gates[0].value", True, "gates[0].value"),
        ("created", "yesterday", "ISO 8601"),
        ("task", "detection", "task"),
        ("artifacts[0].parity.max_abs_diff", float("nan"), "max_abs_diff"),
        ("schema_version", 2, "schema_version 2"),
        ("input.preprocessing.std", [0.0], "input.preprocessing.std"),
        ("input.preprocessing.mean", [0.1, 0.2, 0.3], "3 channels but std has 1"),
        ("input.shape", ["batch", True, 28, 28], "input.shape"),
        ("input.layout", "CHW", "input.layout"),
        ("gates[0].kind", "user", "gates[0].kind"),
    ],
)
def test_bad_values_are_rejected_with_their_path(report: dict, path: str, value: object, expect: str) -> None:
    broken = _drop(report, path)
    parts = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]
    node = broken
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value
    with pytest.raises(InputError, match=re.escape(expect)) as info:
        validate_report(broken)
    assert "\n" not in str(info.value)


def test_extra_keys_and_null_parity_are_allowed(report: dict) -> None:
    extended = copy.deepcopy(report)
    extended["my_ci"] = {"build": 17}
    extended["artifacts"][0]["parity"] = None
    extended["stages"]["prune"]["steps"] = 8
    validate_report(extended)


def test_json_schema_lists_the_required_keys() -> None:
    schema = report_json_schema()
    assert {"schema_version", "compression", "artifacts", "gates", "stages"} <= set(schema["required"])
    json.dumps(schema)


# ------------------------------------------------------------------------------------------ human reports


def test_write_reports_writes_everything_atomically(written: tuple[Path, list[Path]], report: dict) -> None:
    run_dir, paths = written
    names = {p.relative_to(run_dir).as_posix() for p in paths}
    assert {"report.json", "report.md", "report.html", "plots/latency.png", "plots/channels.png"} <= names
    assert {"plots/distillation.png", "plots/metric_vs_latency.png"} <= names
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths if p.suffix == ".png")
    assert json.loads((run_dir / "report.json").read_text()) == report
    assert not list(run_dir.rglob(f"*{TMP_MARK}"))


def test_markdown_has_the_tables_and_names_the_slowest_stage(written: tuple[Path, list[Path]]) -> None:
    md = (written[0] / "report.md").read_text()
    for heading in ("## Teacher vs student", "## Artifacts", "## Latency", "## Pruning", "## Distillation"):
        assert heading in md
    assert "Slowest stage: distill (1 min 35 s, 93 % of 1 min 42 s total)" in md
    assert "| accuracy (ONNX Runtime) | 92.30 % | 91.16 % | −1.14 pp |" in md
    assert "| layer3.0.conv1 | Conv2d | 64 | 28 | 44 % |" in md
    assert "×2.37 at 1 thread" in md and "all cores (2)" in md
    assert "1.05 MiB (1,103,870 B)" in md
    assert "onnxsim failed" in md
    assert "![Latency p50" in md and "(plots/latency.png)" in md
    for line in md.splitlines():  # every table row has as many cells as its header
        if line.startswith("| Artifact | Format"):
            width = line.count(" | ")
        if line.startswith("| student.onnx | onnx"):
            assert line.count(" | ") == width


def test_html_is_self_contained(written: tuple[Path, list[Path]]) -> None:
    html = (written[0] / "report.html").read_text()
    assert html.count('<img src="data:image/png;base64,') == 4
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<link" not in html and "<script" not in html
    assert "Slowest stage: distill" in html and "<table" in html


def test_html_escapes_untrusted_text(tmp_path: Path, report: dict) -> None:
    evil = copy.deepcopy(report)
    evil["recipe"]["report"]["title"] = "<script>alert(1)</script>"
    evil["gates"][0]["name"] = "a|b<img>"
    write_reports(tmp_path, evil, ["md", "html"])
    html = (tmp_path / "report.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "a\\|b" in (tmp_path / "report.md").read_text()


def test_failed_gate_is_flagged(tmp_path: Path) -> None:
    gates = [Gate("parity_max_abs_diff", 3.4e-6, 1e-3, True), Gate("accuracy_drop", 0.0312, 0.02, False)]
    write_reports(tmp_path, make_report(gates=gates), ["md", "html"])
    md, html = (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()
    assert "1 of 2 deploy gates FAILED: accuracy_drop." in md
    assert "| accuracy_drop | 0.0312 | 0.02 | FAIL |" in md
    assert '<td class="fail">FAIL</td>' in html


def test_plots_without_data_are_skipped_and_stale_ones_removed(tmp_path: Path) -> None:
    arts = [Artifact(**{**a.__dict__, "profiles": ()}) for a in _artifacts()]
    write_reports(tmp_path, make_report(), ["json", "md", "html"])
    bare = make_report(prune=None, distill=None, artifacts=arts, gates=[])
    paths = write_reports(tmp_path, bare, ["json", "md", "html"])
    assert not [p for p in paths if p.suffix == ".png"]
    assert not list((tmp_path / "plots").glob("*.png"))
    md = (tmp_path / "report.md").read_text()
    assert "## Pruning" not in md and "No deploy gates were configured." in md


# ----------------------------------------------------------------------------------------------- render()


def test_render_reproduces_md_and_html_from_json(tmp_path: Path, report: dict) -> None:
    write_reports(tmp_path, report, ["json", "md", "html"])
    md, html = (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()
    json_before = (tmp_path / "report.json").read_bytes()
    (tmp_path / "report.md").unlink()
    (tmp_path / "report.html").unlink()
    paths = render(tmp_path)
    assert {p.name for p in paths} >= {"report.md", "report.html"}
    assert (tmp_path / "report.md").read_text() == md
    assert (tmp_path / "report.html").read_text() == html
    assert (tmp_path / "report.json").read_bytes() == json_before


def test_render_refuses_missing_or_invalid_reports(tmp_path: Path, report: dict) -> None:
    with pytest.raises(InputError, match="run directory not found"):
        render(tmp_path / "nope")
    with pytest.raises(InputError, match="report.json: not found"):
        render(tmp_path)
    (tmp_path / "report.json").write_text('{"schema_version": 1,')
    with pytest.raises(InputError, match="not valid JSON"):
        render(tmp_path)
    (tmp_path / "report.json").write_text(json.dumps(_drop(report, "compression.metric_delta")))
    with pytest.raises(InputError, match="'compression.metric_delta'"):
        render(tmp_path)
    assert not (tmp_path / "report.md").exists()


def test_unknown_format_is_an_input_error(tmp_path: Path, report: dict) -> None:
    with pytest.raises(InputError, match="unknown report format 'pdf'"):
        write_reports(tmp_path, report, ["json", "pdf"])


# ------------------------------------------------------------------------- parity checks vs deploy gates

PARITY = [Gate("parity:teacher.onnx", 2.1e-6, 1e-3, True), Gate("parity:student.onnx", 3.4e-6, 1e-3, True)]


def test_parity_checks_are_not_counted_as_deploy_gates(tmp_path: Path) -> None:
    rep = make_report(parity=PARITY, gates=[])
    assert [(g["name"], g["kind"]) for g in rep["gates"]] == [
        ("parity:teacher.onnx", "parity"),
        ("parity:student.onnx", "parity"),
    ]
    assert {"name", "value", "limit", "passed"} <= set(rep["gates"][0])  # the contract's shape, plus kind
    write_reports(tmp_path, rep, ["md", "html"])
    md = (tmp_path / "report.md").read_text()
    assert "All deploy gates passed" not in md and "All deploy gates passed" not in headline(rep)
    assert "Parity checks passed (2 of 2). No deploy gates were configured." in headline(rep)
    assert "No deploy gates were configured." in md and "## Parity checks" in md
    assert "| parity:student.onnx | 3.4e-06 | 0.001 | pass |" in md


def test_deploy_gates_and_parity_checks_are_counted_apart(tmp_path: Path) -> None:
    gates = [
        Gate("max_size_mb:student.onnx", 0.3, 2, True),
        Gate("min_speedup:student.onnx", 1.4, 2.0, False),
    ]
    failed_parity = [PARITY[0], Gate("parity:student.onnx", 0.02, 1e-3, False)]
    rep = make_report(parity=failed_parity, gates=gates)
    assert [g["kind"] for g in rep["gates"]] == ["parity", "parity", "gate", "gate"]
    assert headline(rep).splitlines()[-1] == (
        "1 of 2 parity checks FAILED: parity:student.onnx. "
        "1 of 2 deploy gates FAILED: min_speedup:student.onnx."
    )
    write_reports(tmp_path, make_report(parity=PARITY, gates=gates[:1]), ["md"])
    md = (tmp_path / "report.md").read_text()
    assert "All deploy gates passed (1 of 1)." in md and "Parity checks passed (2 of 2)." in md


def test_reports_written_before_gate_kinds_tell_parity_apart_by_name() -> None:
    old = make_report(parity=PARITY, gates=[Gate("max_size_mb:student.onnx", 0.3, 2, True)])
    for gate in old["gates"]:
        del gate["kind"]
    validate_report(old)
    assert (
        headline(old).splitlines()[-1] == "Parity checks passed (2 of 2). All deploy gates passed (1 of 1)."
    )


# ---------------------------------------------------------------------------------- input and deployment


def test_input_block_is_recorded_and_validated(report: dict) -> None:
    assert report["input"] == {
        "artifact": "student.onnx",
        "name": "input",
        "shape": ["batch", 1, 28, 28],
        "dtype": "float32",
        "layout": "NCHW",
        "preprocessing": {
            "preset": None,
            "mean": [0.286],
            "std": [0.353],
            "formula": "x = (pixel / 255 - mean) / std",
        },
        "classes": list(CLASSES),
    }
    both = copy.deepcopy(report)
    both["input"]["outputs"] = {"pitch": "radians"}
    with pytest.raises(InputError, match="exactly one of 'classes'"):
        validate_report(both)
    older = copy.deepcopy(report)
    del older["input"]  # reports written before the addition stay valid
    validate_report(older)


def test_regression_input_names_its_outputs_instead_of_classes() -> None:
    spec = InputSpec(
        "student.onnx",
        "input",
        ("batch", 1, 36, 60),
        "float32",
        (0.5,),
        (0.21,),
        outputs={"pitch": "radians"},
    )
    rep = make_report(input=spec)
    validate_report(rep)
    assert rep["input"]["outputs"] == {"pitch": "radians"} and "classes" not in rep["input"]


def test_markdown_and_html_show_how_to_call_the_shipped_file(written: tuple[Path, list[Path]]) -> None:
    md = (written[0] / "report.md").read_text()
    section = md.split("## Input and deployment", 1)[1].split("\n## ", 1)[0]
    assert "| Shape | batch × 1 × 28 × 28 |" in section and "| Layout | NCHW |" in section
    assert "| Classes (10) | 0 T-shirt/top, 1 Trouser," in section
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    compile(snippet, "snippet.py", "exec")
    assert "\n\n\ndef preprocess(images):" in snippet  # code blocks keep their blank lines
    assert 'session.run(None, {"input": preprocess(images)})' in snippet
    assert 'CLASSES = [\n    "T-shirt/top", "Trouser",' in snippet
    html = (written[0] / "report.html").read_text()
    assert "<h2>Input and deployment</h2>" in html and '<pre><code class="language-python">' in html
    assert "&#34;T-shirt/top&#34;" in html  # escaped in the page, plain quotes when copied


def test_report_without_input_has_no_deploy_section(tmp_path: Path) -> None:
    write_reports(tmp_path, make_report(input=None), ["json", "md", "html"])
    assert json.loads((tmp_path / "report.json").read_text())["input"] is None
    assert "Input and deployment" not in (tmp_path / "report.md").read_text()
