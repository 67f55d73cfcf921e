"""``compress --resume``: a run SIGKILLed during distillation finishes with the metrics of an uninterrupted one.

The end-to-end tests run the real entry point in subprocesses on a small Fashion-MNIST subset, with one torch
thread (on a shared 2-core machine, two threads per process oversubscribe the cores and run ~10x slower; the
thread count is also part of what makes CPU results bitwise repeatable).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from edgekd.errors import InputError
from edgekd.report import validate_report
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
    from_dict,
    to_dict,
)
from edgekd.run.resume import RunState, flatten, hash_inputs, recipe_diff
from edgekd.rundir import RunDir
from tests.conftest import EDGEKD, QUICKSTART, REPO, SMALL_KD_RUN, cli, cli_env, one_line_error, sets

# two distillation epochs, so that a run can be killed between its first epoch checkpoint and the end
SMALL = (
    *SMALL_KD_RUN,
    *sets("data.train_limit=1024", "data.eval_limit=500", "distill.epochs=2"),
)


def compress(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return cli("compress", str(QUICKSTART), "--out", str(out), *SMALL, *extra)


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """An uninterrupted run: the reference for every resumed one."""
    out = tmp_path_factory.mktemp("straight") / "run"
    proc = compress(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def report(run: Path) -> dict:
    data = json.loads((run / "report.json").read_text())
    validate_report(data)
    return data


def outcome(data: dict) -> dict:
    """Everything in a report that is computed (not timed): it must not depend on being resumed."""
    history = [{k: v for k, v in h.items() if k != "seconds"} for h in data["distillation"]["history"]]
    return {
        "models": data["models"],
        "metric_delta": data["compression"]["metric_delta"],
        "layers": data["pruning"]["layers"] if isinstance(data["pruning"], dict) else data["pruning"],
        "best_epoch": data["distillation"]["best_epoch"],
        "distilled": data["distillation"]["metrics"],
        "history": history,
        "artifacts": {
            a["name"]: {"metrics": a["metrics"], "parity": a["parity"]}
            for a in data["artifacts"]
            if a["format"] == "onnx"
        },
    }


# -- a real kill ----------------------------------------------------------------------------------------------


def test_sigkilled_run_resumes_to_the_metrics_of_an_uninterrupted_run(straight, tmp_path):
    import edgekd

    out = tmp_path / "killed"
    args = [*EDGEKD, "compress", str(QUICKSTART), "--out", str(out), *SMALL]
    log = tmp_path / "stderr.txt"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(args, cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL, stderr=stderr)
    checkpoint = out / "state" / "distill-last.pt"
    try:
        while not checkpoint.exists():  # the first distillation epoch is done once its checkpoint appears
            assert proc.poll() is None, f"compress ended before distilling: {log.read_text()[-2000:]}"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "state" / "distill.done.json").exists(), "the kill came too late to test a resume"
    assert not (out / "report.json").exists() and not (out / "student.onnx").exists()

    resumed = compress(out, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after, before = report(out), report(straight)
    assert after["stages"]["teacher"]["reused"] and after["stages"]["prune"]["reused"]
    assert after["stages"]["distill"]["resumed_checkpoint"] is True  # continued from epoch 1, not restarted
    assert after["reproducibility"]["resumed_training"] == ["distill"]
    assert outcome(after) == outcome(before)
    ours, theirs = edgekd.load_student(out / "student.pt"), edgekd.load_student(straight / "student.pt")
    assert all(
        torch.equal(a, b)
        for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True)
    )
    assert not list(out.rglob("*.edgekd-tmp"))


# -- what a resume reuses, reruns and refuses -----------------------------------------------------------------


def test_resume_with_a_changed_recipe_is_refused_naming_the_keys(straight):
    before = (straight / "report.json").read_bytes()
    proc = compress(straight, "--resume", "--set", "distill.lr=0.5", "--set", "prune.reduction=0.5")
    line = one_line_error(proc)
    assert "distill.lr" in line and "prune.reduction" in line and "--force" in line
    assert (straight / "report.json").read_bytes() == before


def test_forced_resume_reruns_exactly_the_stages_whose_inputs_or_outputs_changed(straight, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    onnx = run / "student.onnx"
    onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])  # damaged after the run finished
    proc = compress(run, "--resume", "--force", "--set", "profile.runs=12")
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = report(run)
    reused = {name for name, info in data["stages"].items() if info.get("reused")}
    assert reused == {"teacher", "prune", "distill"}  # export: its file changed; profile: its recipe did
    student = {a["name"]: a for a in data["artifacts"]}["student.onnx"]
    assert student["profiles"][0]["runs"] == 12
    assert outcome(data) == outcome(report(straight))


# -- the pieces, in process -----------------------------------------------------------------------------------

RESULTS = [
    ModelSummary(params=10, macs=20, metrics={"accuracy": 0.5}),
    PruneResult(
        importance="group_l2",
        target="macs",
        reduction_goal=0.5,
        macs_before=100,
        macs_after=50,
        params_before=10,
        params_after=5,
        steps=2,
        layers=(LayerChannels("conv", "Conv2d", 16, 8),),
        seconds=1.5,
    ),
    TrainResult(
        epochs=1,
        best_epoch=1,
        metrics={"accuracy": 0.9},
        history=(EpochLog(1, 0.3, {"kd": 0.2}, {"accuracy": 0.9}, 0.01, 2.0),),
        seconds=2.0,
    ),
    Artifact(
        name="student.onnx",
        path="student.onnx",
        format="onnx",
        precision="fp32",
        sha256="0" * 64,
        size_bytes=3,
        parity=Parity(1e-6, 1.0, True, 64),
        metrics={"accuracy": 0.9},
        profiles=(Profile("local", {"cpu": "x"}, 1, 1, LatencyStats(1, 2, 3, 2, 0.5, 1, 9), 5.0, 10.0, 20),),
        notes=("simplified",),
    ),
    Gate(name="parity", value=1e-6, limit=1e-3, passed=True),
]


@pytest.mark.parametrize("result", RESULTS, ids=lambda r: type(r).__name__)
def test_results_round_trip_through_json(result):
    assert from_dict(type(result), json.loads(json.dumps(to_dict(result)))) == result


def test_from_dict_refuses_a_foreign_record():
    with pytest.raises(ValueError, match="unknown field"):
        from_dict(Gate, {"name": "x", "value": 1.0, "limit": 1.0, "passed": True, "extra": 1})


def test_recipe_diff_names_nested_and_list_keys_and_ignores_permissions():
    old = {"distill": {"lr": 0.1, "losses": [{"name": "kd", "t": 4}]}, "teacher": {"trust_checkpoint": False}}
    new = {"distill": {"lr": 0.2, "losses": [{"name": "kd", "t": 2}]}, "teacher": {"trust_checkpoint": True}}
    assert recipe_diff(old, new) == ["distill.losses.0.t", "distill.lr"]
    assert flatten({"a": {"b": [1, {"c": 2}]}}) == {"a.b.0": 1, "a.b.1.c": 2}
    assert hash_inputs({"a": 1, "b": 2}) == hash_inputs({"b": 2, "a": 1}) != hash_inputs({"a": 1, "b": 3})


def test_a_stage_marker_is_reused_only_for_the_same_inputs_and_unchanged_outputs(tmp_path):
    run = RunDir(tmp_path).create()
    state = RunState(run)
    output = tmp_path / "student.pt"
    output.write_bytes(b"weights")
    state.finish("distill", "h1", [output], 1.0, {"ok": True})
    assert state.load("distill", "h1").result == {"ok": True}
    assert state.load("distill", "h2") is None
    output.write_bytes(b"other weights")
    assert state.load("distill", "h1") is None


def test_a_corrupt_epoch_checkpoint_restarts_training_instead_of_failing(tmp_path):
    state = RunState(RunDir(tmp_path).create())
    path, resume = state.training_checkpoint("distill", "h1", resume=True)
    assert not resume  # nothing to resume from yet; the start is recorded
    torch.save({"epoch": 1}, path)
    assert state.training_checkpoint("distill", "h1", resume=True) == (path, True)
    assert state.training_checkpoint("distill", "h2", resume=True) == (path, False)  # other inputs
    assert not path.exists()
    state.training_checkpoint("distill", "h1", resume=False)
    path.write_bytes(b"truncated")
    assert state.training_checkpoint("distill", "h1", resume=True) == (path, False)


def test_changed_recipe_on_resume_raises_input_error(tmp_path):
    run = RunDir(tmp_path).create()
    run.recipe.write_text("seed: 0\ndistill: {lr: 0.1}\n")
    state = RunState(run)
    with pytest.raises(InputError, match=r"differs .*\(distill\.lr\)"):
        state.check_recipe({"seed": 0, "distill": {"lr": 0.2}}, force=False)
    state.check_recipe({"seed": 0, "distill": {"lr": 0.2}}, force=True)  # forced: allowed
