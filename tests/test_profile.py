"""The profile stage: the standalone probe as a real subprocess, the local target, and the stage functions.

Models are built with ``onnx.helper`` (a few KiB, load in milliseconds) so every probe process is dominated by
importing onnxruntime. No wall-clock asserts: only orderings, counts, bounds and messages.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from pydantic import ValidationError

from edgekd.errors import EdgekdError, InputError
from edgekd.profile import (
    PROBE_PATH,
    TARGETS,
    DeviceTarget,
    ProbeSettings,
    Target,
    TargetSpec,
    get_target,
    parse_probe_output,
    profile_files,
    profile_model,
)
from edgekd.profile import probe as probe_module
from edgekd.profile.checks import PREFLIGHT_SCRIPT, Check, read_preflight
from edgekd.profile.resolve import check_target, device_kinds, kind_for_scheme, list_targets, resolve_target
from edgekd.recipe.schema import ProfileConfig
from edgekd.results import Profile, to_dict

FAST = {"warmup": 1, "runs": 5}


def save_model(
    path: Path, nodes, inits=(), x_shape=("N", 3, 16, 16), y_shape=("N", 8, 16, 16), domains=()
) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(y_shape))
    opsets = [helper.make_opsetid("", 18)] + [helper.make_opsetid(d, 1) for d in domains]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], list(inits)), opset_imports=opsets)
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def conv_nodes():
    weight = np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    return nodes, [numpy_helper.from_array(weight, "w")]


@pytest.fixture(scope="module")
def conv_onnx(tmp_path_factory) -> Path:
    nodes, inits = conv_nodes()
    return save_model(tmp_path_factory.mktemp("profile") / "conv.onnx", nodes, inits)


def probe(*args: str) -> tuple[int, dict]:
    done = subprocess.run(
        [sys.executable, str(PROBE_PATH), *args], capture_output=True, text=True, timeout=120
    )
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, f"probe must print exactly one JSON line, got {done.stdout!r} / {done.stderr!r}"
    return done.returncode, json.loads(lines[0])


# ------------------------------------------------------------------------------------------- the probe itself
def test_probe_source_is_standalone_and_python38():
    src = PROBE_PATH.read_text(encoding="utf-8")
    tree = ast.parse(src, feature_version=(3, 8))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert "edgekd" not in imported
    assert not any(isinstance(node, ast.Match) for node in ast.walk(tree))
    third_party = imported - set(sys.stdlib_module_names) - {"__future__"}
    assert third_party == {"numpy", "onnxruntime"}


def test_probe_fixed_runs_json(conv_onnx):
    code, out = probe(str(conv_onnx), "--threads", "1", "--batch", "2", "--warmup", "2", "--runs", "17")
    assert code == 0, out
    lat = out["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"]
    assert lat["first"] > 0 and lat["mean"] > 0 and lat["std"] >= 0
    assert out["runs"] == 17 and out["stop_reason"] == "fixed_runs"
    assert out["load_ms"] > 0 and out["peak_rss_mb"] > 0
    assert out["intra_op_threads"] == 1
    assert out["inputs"] == [
        {"name": "x", "shape": [2, 3, 16, 16], "declared": ["N", 3, 16, 16], "dtype": "float32"}
    ]
    assert out["onnxruntime"]["version"] and "CPUExecutionProvider" in out["onnxruntime"]["providers"]
    device = out["device"]
    for key in ("cpu", "logical_cores", "governor", "freq_max_mhz", "temperature_c", "throttled", "nvpmodel"):
        assert key in device  # present even when the machine has no such sensor (null)
    assert device["logical_cores"] == os.cpu_count() and device["machine"] and device["platform"]
    assert "after" in device


def test_probe_adaptive_runs_respect_bounds(conv_onnx):
    base = [str(conv_onnx), "--warmup", "1"]
    code, out = probe(*base, "--time-budget", "0.3", "--min-runs", "5", "--max-runs", "60")
    assert code == 0 and 5 <= out["runs"] <= 60
    assert out["stop_reason"] in {"ci_target", "time_budget", "max_runs"}
    # the floor wins over a budget that is already spent
    code, out = probe(*base, "--time-budget", "1e-6", "--min-runs", "12")
    assert (out["runs"], out["stop_reason"]) == (12, "time_budget")
    # an unreachable CI target stops at the ceiling
    code, out = probe(
        *base, "--time-budget", "60", "--min-runs", "3", "--max-runs", "9", "--ci-target", "1e-12"
    )
    assert (out["runs"], out["stop_reason"]) == (9, "max_runs")


def test_probe_named_dims_and_op_profile(tmp_path):
    nodes, inits = conv_nodes()
    path = save_model(
        tmp_path / "dyn.onnx", nodes, inits, x_shape=("N", 3, "H", "W"), y_shape=("N", 8, "H", "W")
    )
    code, out = probe(
        str(path), "--runs", "3", "--warmup", "0", "--dim", "H=10", "--dim", "W=6", "--op-profile"
    )
    assert code == 0, out
    assert out["inputs"][0]["shape"] == [1, 3, 10, 6]
    assert {row["op_type"] for row in out["op_profile"]["by_op_type"]} >= {"Conv"}
    assert abs(sum(row["share"] for row in out["op_profile"]["by_op_type"]) - 1.0) < 1e-6


def test_probe_baseline_and_errors(tmp_path):
    code, out = probe("--baseline")
    assert code == 0 and out["baseline"] is True and out["peak_rss_mb"] > 0
    code, out = probe(str(tmp_path / "missing.onnx"))
    assert code == 1 and "not found" in out["error"]
    code, out = probe(str(tmp_path / "x.onnx"), "--runs", "3", "--time-budget", "2")
    assert code == 2 and "not allowed with" in out["error"]


def test_median_ci_matches_order_statistics():
    values = [float(v) for v in range(1, 101)]  # median 50.5; ranks 40 and 61 bound the 95% CI
    assert probe_module.median_ci_rel(values[::-1]) == pytest.approx(10.5 / 50.5)
    assert probe_module.median_ci_rel([2.0] * 30) == 0.0


def test_settings_argv_is_what_the_probe_parses():
    fixed = probe_module.parse_args(
        ["m.onnx", *ProbeSettings(threads=0, batch=4, runs=9, dims=(("H", 8),)).argv()]
    )
    assert (fixed.threads, fixed.batch, fixed.runs, fixed.dim) == (0, 4, 9, [("H", 8)])
    cfg = ProfileConfig(time_budget_s=1.5, min_runs=3, max_runs=40, ci_target=0.05, warmup=2)
    adaptive = probe_module.parse_args(["m.onnx", *ProbeSettings.from_config(cfg, threads=2).argv()])
    got = (adaptive.runs, adaptive.time_budget, adaptive.min_runs, adaptive.max_runs, adaptive.ci_target)
    assert got == (None, 1.5, 3, 40, 0.05) and adaptive.warmup == 2


# ------------------------------------------------------------------------------------- target and stage
def test_local_target_registered_and_unknown_names_suggest():
    assert "local" in TARGETS
    with pytest.raises(InputError, match="did you mean 'local'"):
        get_target("locl")


def test_profile_model_threads_runs_and_memory(conv_onnx):
    profiles = profile_model(conv_onnx, ProfileConfig(threads=[1, 0], **FAST))
    assert [p.device["threads_requested"] for p in profiles] == [1, 0]
    assert profiles[0].threads == 1
    assert 1 <= profiles[1].threads <= os.cpu_count()  # 0 resolved to the pool ORT actually created
    for p in profiles:
        assert isinstance(p, Profile) and p.target == "local" and p.batch == 1
        assert p.runs == FAST["runs"]
        assert p.latency_ms.min <= p.latency_ms.p50 <= p.latency_ms.p90 <= p.latency_ms.p99
        assert p.load_ms > 0 and p.peak_rss_mb > 0
        m = p.device["measurement"]
        assert p.peak_rss_mb == pytest.approx(m["peak_rss_total_mb"] - m["baseline_rss_mb"], abs=0.01)
        json.dumps(to_dict(p), allow_nan=False)  # goes into report.json as is


def test_peak_rss_is_not_inherited_from_a_large_parent(conv_onnx):
    """ru_maxrss survives fork+exec on Linux; the probe must report its own address space only."""
    ballast = np.ones(300 * 2**20 // 8)  # this test process now holds 300 MiB more than the probe needs
    (profile,) = profile_model(conv_onnx, ProfileConfig(threads=[1], **FAST))
    assert profile.device["measurement"]["peak_rss_total_mb"] < 250
    del ballast


def test_run_over_artifacts(conv_onnx):
    out = profile_files({"student": conv_onnx}, ProfileConfig(threads=[1], **FAST))
    assert list(out) == ["student"] and len(out["student"]) == 1


def test_not_onnx_is_input_error(tmp_path, conv_onnx):
    text = tmp_path / "model.onnx"
    text.write_text("this is not a model\n")
    with pytest.raises(InputError, match="not a valid ONNX file"):
        profile_model(text, ProfileConfig(**FAST))
    with pytest.raises(InputError, match="model.onnx"):
        profile_files({"student": conv_onnx, "teacher": text}, ProfileConfig(**FAST))


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("unknown_op", "com.example:Foo"),
        ("bad_reshape", "cannot be reshaped"),
        ("fixed_batch", "fixed batch of 1 but batch 2"),
    ],
)
def test_probe_failure_is_runtime_error_with_message(tmp_path, kind, message):
    """Files valid for onnx.checker that ORT cannot load, cannot run, or the probe cannot feed."""
    path = tmp_path / f"{kind}.onnx"
    batch = 1
    if kind == "unknown_op":
        save_model(
            path, [helper.make_node("Foo", ["x"], ["y"], domain="com.example")], domains=["com.example"]
        )
    elif kind == "bad_reshape":
        shape = numpy_helper.from_array(np.array([-1, 7], np.int64), "s")
        save_model(path, [helper.make_node("Reshape", ["x", "s"], ["y"])], [shape], y_shape=("N", 7))
    else:
        nodes, inits = conv_nodes()
        save_model(path, nodes, inits, x_shape=(1, 3, 16, 16), y_shape=(1, 8, 16, 16))
        batch = 2
    with pytest.raises(EdgekdError, match=message) as info:
        profile_model(path, ProfileConfig(threads=[1], batch=batch, **FAST))
    assert not isinstance(info.value, InputError)
    assert "\n" not in str(info.value)


def test_timeout_and_garbage_output_are_runtime_errors(conv_onnx):
    with pytest.raises(EdgekdError, match="timed out"):
        get_target("local").run_probe(conv_onnx, ProbeSettings(runs=3, timeout_s=0.001))
    with pytest.raises(EdgekdError, match=r"failed \(killed by SIGKILL\): Killed"):
        parse_probe_output("", "Traceback\nKilled\n", -9, where="local")
    with pytest.raises(EdgekdError, match=r"failed \(exit code 1\): no output"):
        parse_probe_output("not json\n", "", 1, where="local")


def test_config_rejects_inverted_run_bounds():
    with pytest.raises(ValidationError, match="min_runs"):
        ProfileConfig(min_runs=50, max_runs=10)


# TensorRT via trtexec (Jetson). This machine has no trtexec: the parser is checked on trtexec's own output
# format (TensorRT 8.5, as printed on a Jetson Orin), and the probe must report "none here" without failing.
TRTEXEC_OUTPUT = """\
[11/23/2026-10:01:02] [I] === Performance summary ===
[11/23/2026-10:01:02] [I] Throughput: 1612.53 qps
[11/23/2026-10:01:02] [I] Latency: min = 0.640381 ms, max = 0.797607 ms, mean = 0.659571 ms, median = 0.656738 ms, percentile(90%) = 0.66748 ms, percentile(95%) = 0.672852 ms, percentile(99%) = 0.705078 ms
[11/23/2026-10:01:02] [I] Enqueue Time: min = 0.2 ms, max = 0.4 ms, mean = 0.25 ms, median = 0.24 ms, percentile(90%) = 0.3 ms, percentile(95%) = 0.31 ms, percentile(99%) = 0.35 ms
[11/23/2026-10:01:02] [I] GPU Compute Time: min = 0.60498 ms, max = 0.709961 ms, mean = 0.617505 ms, median = 0.615967 ms, percentile(90%) = 0.625977 ms, percentile(95%) = 0.62915 ms, percentile(99%) = 0.644043 ms
"""  # noqa: E501


def test_trtexec_summary_is_parsed():
    from edgekd.profile.probe import parse_trtexec_times

    gpu = parse_trtexec_times(TRTEXEC_OUTPUT, "GPU Compute Time")
    assert gpu == {
        "min": 0.60498, "max": 0.709961, "mean": 0.617505, "median": 0.615967,
        "p90": 0.625977, "p95": 0.62915, "p99": 0.644043,
    }  # fmt: skip
    assert parse_trtexec_times(TRTEXEC_OUTPUT, "Latency")["median"] == 0.656738
    assert parse_trtexec_times("[I] no summary here", "Latency") is None


def test_tensorrt_is_null_where_there_is_no_trtexec(conv_onnx, tmp_path, monkeypatch):
    """A device without trtexec (empty PATH, no JetPack path) reports null; the ORT timing is unaffected."""
    from argparse import Namespace

    from edgekd.profile import probe

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(probe, "TRTEXEC_PATHS", ())
    inputs = [{"name": "input", "shape": [1, 1, 28, 28]}]
    args = Namespace(tensorrt_fp16=False, tensorrt_timeout=10.0)
    assert probe.tensorrt_profile(str(conv_onnx), inputs, args) is None
    (profile,) = profile_model(conv_onnx, ProfileConfig(threads=[1], tensorrt=True, **FAST))
    assert "tensorrt" in profile.device and profile.runs > 0


# ------------------------------------------------------------------------------------- pluggable target kinds
class BenchSpec(TargetSpec):
    """A "device" that is this machine under a bench label, run with a chosen interpreter."""

    bench: str
    python: str = sys.executable

    def describe(self) -> str:
        return f"bench {self.bench}"


class BenchTarget(DeviceTarget):
    """A second target kind, defined here to prove a kind plugs in with one class and one registration.

    Its transport is a plain subprocess, but the measurement is the real probe on a real ONNX file.

    Recipe::

        profile:
          targets: ["bench://desk?threads=1", desk]

    targets.yaml::

        targets:
          desk: {kind: bench, bench: desk, threads: [1]}
    """

    scheme = "bench"
    Spec = BenchSpec
    url_form = "bench://LABEL"
    spec: BenchSpec

    @classmethod
    def parse_url(cls, url: str) -> TargetSpec:
        return cls.spec_from_url(url, {"bench": urlsplit(url).hostname or ""}, url_keys=("bench",))

    def check(self) -> list[Check]:
        done = subprocess.run(
            [self.spec.python, "-c", PREFLIGHT_SCRIPT], capture_output=True, text=True, check=False
        )
        return read_preflight(done, self.spec.python, self.address)[0]

    def run_probe(self, model_path: Path | None, settings: ProbeSettings) -> dict[str, Any]:
        cmd = [self.spec.python, str(PROBE_PATH)]
        cmd += ["--baseline"] if model_path is None else [str(model_path), *settings.argv()]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=settings.timeout_s, check=False)
        answer = parse_probe_output(done.stdout, done.stderr, done.returncode, where=self.name)
        answer.setdefault("device", {})["bench"] = self.spec.bench
        return answer


@contextmanager
def registered_bench_kind() -> Iterator[type[BenchTarget]]:
    """``bench`` in TARGETS for the block only, with the stage's per-name target cache emptied around it."""
    from edgekd.profile import measure

    saved = dict(measure._INSTANCES)
    measure._INSTANCES.clear()
    TARGETS.register("bench")(BenchTarget)
    try:
        yield BenchTarget
    finally:
        TARGETS.unregister("bench")
        measure._INSTANCES.clear()
        measure._INSTANCES.update(saved)


def test_a_second_target_kind_resolves_from_targets_yaml_and_url_and_profiles(
    conv_onnx, tmp_path, monkeypatch
):
    targets = tmp_path / "targets.yaml"
    desk = f"{{kind: bench, bench: desk, threads: [1], python: {sys.executable}}}"
    pi5 = "{host: pi5.local, user: pi}   # kind: ssh by default, beside the new kind"
    targets.write_text(f"targets:\n  desk: {desk}\n  pi5: {pi5}\n")
    monkeypatch.setenv("EDGEKD_TARGETS", str(targets))
    cfg = ProfileConfig(threads=[1, 0], **FAST)
    with registered_bench_kind():
        named = get_target("desk")
        assert isinstance(named, BenchTarget) and named.threads == [1] and named.spec.bench == "desk"
        assert type(resolve_target("pi5")).__name__ == "SSHTarget" and resolve_target("pi5").threads is None
        (profile,) = profile_model(conv_onnx, cfg, target="desk")  # the entry's threads override [1, 0]
        assert profile.target == "desk" and profile.threads == 1 and profile.runs == FAST["runs"]
        assert profile.device["bench"] == "desk" and profile.device["measurement"]["baseline_rss_mb"] > 0

        url = "bench://lab?threads=0"
        from_url = get_target(url)
        assert isinstance(from_url, BenchTarget) and from_url.name == url and from_url.spec.bench == "lab"
        out = profile_files({"conv": conv_onnx}, ProfileConfig(targets=["local", url], threads=[1], **FAST))
        assert [(p.target, p.device["threads_requested"]) for p in out["conv"]] == [("local", 1), (url, 0)]
        assert 1 <= out["conv"][1].threads <= os.cpu_count() and out["conv"][1].device["bench"] == "lab"

        checked = check_target("desk")  # `edgekd targets --check desk`: through the kind's own check()
        assert (checked.kind, checked.address, checked.ok) == ("bench", "bench desk", True)
        assert [c.name for c in checked.checks] == ["python", "numpy", "onnxruntime"]
        listed = {t.name: t for t in list_targets().targets}
        assert (listed["desk"].kind, listed["desk"].address, listed["pi5"].address) == (
            "bench",
            "bench desk",
            "pi@pi5.local",
        )
    assert "bench" not in TARGETS


def test_unknown_scheme_kind_and_key_are_one_line_with_suggestions(tmp_path, monkeypatch):
    targets = tmp_path / "targets.yaml"
    monkeypatch.setenv("EDGEKD_TARGETS", str(targets))
    with registered_bench_kind():
        with pytest.raises(
            InputError,
            match=r"unknown scheme 'bnch://'; did you mean 'bench'\? \(valid: .*"
            r"bench://LABEL.*ssh://user@host\[:port\]\)$",
        ):
            resolve_target("bnch://desk")
        with pytest.raises(InputError, match=r"give bench in the URL itself, not as \?bench="):
            resolve_target("bench://desk?bench=other")
        with pytest.raises(
            InputError,
            match=r"target bench://desk\?pyton=x: bench\.pyton: unknown key; did you mean 'python'",
        ):
            resolve_target("bench://desk?pyton=x")
        with pytest.raises(InputError, match=r"target 'bench' needs a device: write bench://LABEL"):
            resolve_target("bench")
        for kind, hint in (("bnech", "; did you mean 'bench'?"), ("local", "")):
            targets.write_text(f"targets:\n  desk: {{kind: {kind}, bench: desk}}\n")
            with pytest.raises(InputError) as info:
                resolve_target("desk")
            assert str(info.value) == (
                f"{targets}: targets.desk.kind: unknown target kind '{kind}'{hint} (valid: bench, ssh)"
            )
        targets.write_text("targets:\n  desk: {kind: bench, bnch: desk}\n")
        with pytest.raises(InputError, match=r"targets\.desk\.bnch: unknown key; did you mean 'bench'"):
            resolve_target("desk")
    with pytest.raises(InputError, match=r"unknown scheme 'bench://' \(valid: ssh://"):
        resolve_target("bench://desk")  # unregistered again


def test_target_kinds_have_distinct_schemes():
    schemes = [kind.scheme for kind in device_kinds().values()]
    assert len(schemes) == len(set(schemes)) and all(re.fullmatch(r"[a-z][a-z0-9+.-]*", s) for s in schemes)


@pytest.mark.parametrize("name", TARGETS.names())
def test_every_registered_target_resolves_and_documents_itself(name, tmp_path, monkeypatch):
    """Plain targets resolve by name; kinds by the URL their docstring shows, and document ``kind: <name>``."""
    monkeypatch.setenv("EDGEKD_TARGETS", str(tmp_path / "none.yaml"))
    cls = TARGETS.get(name)
    doc = cls.__doc__ or ""
    assert issubclass(cls, Target) and "Recipe::" in doc and "targets:" in doc, f"{name}: no recipe snippet"
    if not issubclass(cls, DeviceTarget):
        assert f"targets: [{name}" in doc
        assert isinstance(resolve_target(name), cls) and resolve_target(name).threads is None
        return
    assert issubclass(cls.Spec, TargetSpec) and "threads" in cls.Spec.model_fields
    assert cls.url_form.startswith(f"{cls.scheme}://") and kind_for_scheme(cls.scheme, "-") is cls
    assert f"kind: {name}" in doc, f"{name}: docstring lacks its targets.yaml snippet"
    urls = re.findall(rf'"({re.escape(cls.scheme)}://[^"]+)"', doc)
    assert urls, f"{name}: docstring lacks a {cls.scheme}:// URL in its recipe snippet"
    for url in urls:
        target = resolve_target(url)  # never connects
        assert isinstance(target, cls) and target.name == url and isinstance(target.spec, cls.Spec)
        assert target.threads == target.spec.threads
    with pytest.raises(InputError, match=f"target '{name}' needs a device"):
        resolve_target(name)


# ------------------------------------------------------------------------ input sizes and execution providers
# `edgekd profile` on any ONNX file: a dynamic H x W is sized by --dim/--shape or the export's recorded
# input_shape, never silently by 1; --provider picks the execution provider. Real files, real probe processes.
CLI_FAST = ("--runs", "5", "--warmup", "1", "--threads", "1")


@pytest.fixture(scope="module")
def dynamic_hw_onnx(tmp_path_factory) -> Path:
    """A conv net whose height and width are dynamic and which records no input size (not an edgekd export)."""
    nodes, inits = conv_nodes()
    return save_model(
        tmp_path_factory.mktemp("dynamic") / "dyn.onnx",
        nodes,
        inits,
        x_shape=("N", 3, "height", "width"),
        y_shape=("N", 8, "height", "width"),
    )


def with_metadata(source: Path, target: Path, props: dict[str, str]) -> Path:
    """``source`` saved as ``target`` with ``metadata_props``, as edgekd's export writes them."""
    model = onnx.load(str(source))
    helper.set_model_props(model, props)
    onnx.save(model, str(target))
    return target


def profiled_inputs(proc: subprocess.CompletedProcess) -> list[dict]:
    """The ``device.inputs`` of the single profile a ``--json`` run printed."""
    assert proc.returncode == 0, proc.stderr[-2000:]
    (profile,) = json.loads(proc.stdout)
    return profile["device"]["inputs"]


def test_cli_refuses_a_dynamic_height_width_without_a_size(dynamic_hw_onnx):
    from tests.conftest import cli, one_line_error

    line = one_line_error(cli("profile", str(dynamic_hw_onnx), *CLI_FAST))
    assert "dyn.onnx" in line and "height (axis 2), width (axis 3)" in line, line
    assert "--dim height=SIZE --dim width=SIZE" in line and "--shape x=1x3xSIZExSIZE" in line, line


def test_cli_dim_shape_and_provider_are_what_the_profile_records(dynamic_hw_onnx):
    from tests.conftest import cli

    common = ("profile", str(dynamic_hw_onnx), *CLI_FAST, "--json")
    assert profiled_inputs(cli(*common, "--dim", "height=10", "--dim", "width=6")) == [
        {"name": "x", "shape": [1, 3, 10, 6], "declared": ["N", 3, "height", "width"], "dtype": "float32"}
    ]
    proc = cli(*common, "--batch", "2", "--shape", "x=2x3x12x8", "--provider", "CPUExecutionProvider")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (by_shape,) = json.loads(proc.stdout)
    assert by_shape["batch"] == 2 and by_shape["device"]["inputs"][0]["shape"] == [2, 3, 12, 8]
    runtime = by_shape["device"]["onnxruntime"]
    assert runtime["providers"] == ["CPUExecutionProvider"] and runtime["requested"] == "CPUExecutionProvider"


def test_cli_refuses_a_provider_the_device_lacks_listing_those_it_has(conv_onnx):
    import onnxruntime as ort

    from tests.conftest import cli, one_line_error

    available = ort.get_available_providers()
    wanted = ("CUDAExecutionProvider", "TensorrtExecutionProvider", "CoreMLExecutionProvider")
    missing = next(p for p in wanted if p not in available)
    line = one_line_error(cli("profile", str(conv_onnx), *CLI_FAST, "--provider", missing))
    assert f"--provider {missing}: not available" in line, line
    assert f"(available: {', '.join(available)})" in line, line


def test_recorded_input_shape_is_the_default_size(dynamic_hw_onnx, tmp_path):
    """edgekd's exports record input_shape: `compress`'s profiler and `edgekd profile` feed it without flags."""
    props = {"input_name": "x", "input_shape": json.dumps(["batch", 3, 20, 12])}
    path = with_metadata(dynamic_hw_onnx, tmp_path / "exported.onnx", props)
    (recorded,) = profile_model(path, ProfileConfig(threads=[1], **FAST))
    assert recorded.device["inputs"][0]["shape"] == [1, 3, 20, 12]
    (resized,) = profile_model(path, ProfileConfig(threads=[1], dims={"height": 9}, **FAST))
    assert resized.device["inputs"][0]["shape"] == [1, 3, 9, 12]  # --dim / profile.dims win over the record
    with pytest.raises(InputError, match=r"dyn\.onnx: input 'x' .*pass --dim height=SIZE --dim width=SIZE"):
        profile_model(dynamic_hw_onnx, ProfileConfig(threads=[1], **FAST))  # bad input: exit 2, not 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--dim", "hieght=8", "--dim", "width=8"), "no dynamic dimension 'hieght'; did you mean 'height'?"),
        (("--shape", "xx=1x3x8x8"), "no input 'xx'; did you mean 'x'? (inputs: x)"),
        (("--shape", "x=1x3x8"), "input 'x' has 4 dimensions [N, 3, height, width], not 3"),
        (("--shape", "x=1x4x8x8"), "axis 1 of input 'x' [N, 3, height, width] is fixed at 3"),
        (("--shape", "x=2x3x8x8"), "its batch (axis 0) is 2 but --batch is 1; pass --batch 2 too"),
        (("--provider", "CUDAExecutonProvider"), "did you mean 'CUDAExecutionProvider'?"),
    ],
)
def test_probe_refuses_sizes_and_providers_the_model_or_device_lacks(dynamic_hw_onnx, args, message):
    """The probe answers a request it cannot meet as asked with exit code 2, which edgekd reads as bad input."""
    code, out = probe(str(dynamic_hw_onnx), "--runs", "1", "--warmup", "0", *args)
    assert code == 2 and message in out["error"], out
    with pytest.raises(InputError, match="profiling on local: "):
        parse_probe_output(json.dumps(out), "", code, where="local")


def test_probe_shape_provider_and_dim_default(dynamic_hw_onnx):
    code, out = probe(
        str(dynamic_hw_onnx), "--runs", "2", "--warmup", "0", "--dim-default", "4", "--provider", "cpu"
    )
    assert code == 0, out
    assert out["inputs"][0]["shape"] == [1, 3, 4, 4]  # an explicit --dim-default still sizes what is left
    assert out["onnxruntime"]["requested"] == "CPUExecutionProvider"
    assert "CPUExecutionProvider" in out["onnxruntime"]["available"]


def test_sizes_and_provider_reach_the_probe_and_bad_flags_are_one_line():
    from edgekd.profile.target import parse_dim, parse_shape

    cfg = ProfileConfig(
        dims={"height": 224}, shapes={"input": [1, 3, 64, 48]}, provider="CUDAExecutionProvider"
    )
    args = probe_module.parse_args(["m.onnx", *ProbeSettings.from_config(cfg, threads=1).argv()])
    assert (args.dim, args.shape) == ([("height", 224)], [("input", [1, 3, 64, 48])])
    assert args.provider == "CUDAExecutionProvider"
    default = probe_module.parse_args(["m.onnx", *ProbeSettings.from_config(ProfileConfig(), 1).argv()])
    assert (default.dim, default.shape, default.provider, default.dim_default) == ([], [], None, None)
    assert parse_dim("height=224") == ("height", 224)
    assert parse_shape("in:0=1x3x8X8") == ("in:0", [1, 3, 8, 8])  # names as TF converters write them
    for bad in ("height", "height=0", "=3"):
        with pytest.raises(InputError, match=r"^--dim .*expected NAME=SIZE"):
            parse_dim(bad)
    for bad in ("input", "input=1x3xx8", "input=1x0x8x8"):
        with pytest.raises(InputError, match=r"^--shape .*expected INPUT=SHAPE"):
            parse_shape(bad)
    with pytest.raises(ValidationError, match="dimension sizes must be >= 1"):
        ProfileConfig(dims={"height": 0})
    with pytest.raises(ValidationError, match="shapes must be non-empty"):
        ProfileConfig(shapes={"input": []})
