"""End-to-end through the real entry point (``python -m edgekd``) on a Fashion-MNIST subset.

One compress run (session fixture) is shared by the contract assertions, so the suite pays for it once.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgekd.report import validate_report
from tests.conftest import QUICKSTART, SMALL_KD_RUN, cli, one_line_error, sets

# The shared small run, plus what the tests below measure: the resolved train_limit, 30 profile runs, and enough
# eval images and parity samples that ORT-vs-PyTorch accuracy and agreement leave room for a flipped prediction.
SMALL = (
    *SMALL_KD_RUN,
    *sets("data.train_limit=2048", "data.eval_limit=1000", "profile.runs=30", "export.parity_samples=128"),
)
FINAL_ARTIFACTS = ("teacher.onnx", "student.onnx", "student.pt", "report.json", "report.md", "report.html")


@pytest.fixture(scope="session")
def compressed(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "quick"
    proc = cli("compress", str(QUICKSTART), "--out", str(out), *SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_compress_writes_the_run_directory_contract(compressed):
    out, _ = compressed
    for name in (*FINAL_ARTIFACTS, "recipe.yaml", "edgekd.log"):
        assert (out / name).is_file(), name
    assert list((out / "plots").glob("*.png"))
    assert not list(out.rglob("*.edgekd-tmp"))


def test_report_has_every_contract_key_and_passes_validation(compressed):
    out, _ = compressed
    report = json.loads((out / "report.json").read_text())
    validate_report(report)
    for key in (
        "schema_version",
        "edgekd_version",
        "created",
        "task",
        "recipe",
        "environment",
        "models",
        "compression",
        "artifacts",
        "gates",
        "stages",
    ):
        assert key in report
    assert report["recipe"]["data"]["train_limit"] == 2048  # the resolved recipe, with overrides


def test_macs_reduction_meets_target_within_one_point(compressed):
    report = json.loads((compressed[0] / "report.json").read_text())
    assert abs(report["compression"]["macs_reduction"] - 0.75) <= 0.01


def test_parity_passed_and_ort_accuracy_matches_pytorch(compressed):
    report = json.loads((compressed[0] / "report.json").read_text())
    student = {a["name"]: a for a in report["artifacts"]}["student.onnx"]
    assert student["parity"]["passed"] and student["parity"]["agreement"] >= 0.99
    ort_acc = student["metrics"]["accuracy"]
    torch_acc = report["models"]["student"]["metrics"]["accuracy"]
    assert abs(ort_acc - torch_acc) <= 0.002


def test_latency_figures_are_positive_and_ordered(compressed):
    report = json.loads((compressed[0] / "report.json").read_text())
    profiled = [a for a in report["artifacts"] if a["format"] == "onnx"]
    assert {a["name"] for a in profiled} == {"teacher.onnx", "student.onnx"}
    for artifact in profiled:
        assert artifact["profiles"]
        for p in artifact["profiles"]:
            lat = p["latency_ms"]
            assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"]
            assert p["runs"] == 30 and p["load_ms"] > 0


def test_load_student_in_a_fresh_process_reproduces_outputs(compressed, tmp_path):
    import torch

    import edgekd

    out = compressed[0]
    x = torch.randn(4, 1, 28, 28)
    torch.save(x, tmp_path / "x.pt")
    expected = edgekd.load_student(out / "student.pt")(x)
    code = (
        "import sys, torch, edgekd; m = edgekd.load_student(sys.argv[1]); "
        "x = torch.load(sys.argv[2]); torch.save(m(x), sys.argv[3])"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(out / "student.pt"), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
        check=True,
        capture_output=True,
    )
    assert torch.equal(torch.load(tmp_path / "y.pt"), expected)


def test_report_command_regenerates_human_reports(compressed):
    out, _ = compressed
    (out / "report.md").unlink()
    proc = cli("report", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "MACs" in (out / "report.md").read_text()


def test_export_command_takes_a_student_pt(compressed, tmp_path):
    proc = cli("export", str(compressed[0] / "student.pt"), "--out", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    artifact = json.loads(proc.stdout)
    assert artifact["parity"]["passed"] and (tmp_path / "student.onnx").is_file()
    assert artifact["variants"] == []


def test_export_command_adds_int8_and_fp16_files(compressed, tmp_path):
    student = str(compressed[0] / "student.pt")
    proc = cli("export", student, "--out", str(tmp_path), "--set", "export.int8={calibration_samples: 64}",
               "--set", "export.fp16=true", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    variants = {v["name"]: v for v in json.loads(proc.stdout)["variants"]}
    assert set(variants) == {"student.int8.onnx", "student.fp16.onnx"}
    assert variants["student.int8.onnx"]["precision"] == "int8"
    assert variants["student.int8.onnx"]["parity"]["agreement"] >= 0.97
    assert all((tmp_path / name).is_file() for name in variants)


def test_profile_command_on_any_onnx(compressed):
    proc = cli("profile", str(compressed[0] / "student.onnx"), "--threads", "1", "--runs", "10", "--json")
    assert proc.returncode == 0, proc.stderr
    (profile,) = json.loads(proc.stdout)
    assert profile["runs"] == 10 and profile["threads"] == 1


# Bad input: exit 2, exactly one error line on stderr, nothing left under a final name.


def test_bad_recipe_key_is_exit_2_one_line(tmp_path, write_recipe):
    recipe = write_recipe("teacher: {model: {name: resnet20}}\nprune: {ratio: 0.5}\n")
    line = one_line_error(cli("compress", str(recipe), "--out", str(tmp_path / "o")))
    assert "prune.ratio" in line
    assert not any((tmp_path / "o" / name).exists() for name in FINAL_ARTIFACTS)


def test_missing_recipe_is_exit_2(tmp_path):
    assert "not found" in one_line_error(cli("compress", str(tmp_path / "x.yaml"), "--out", str(tmp_path)))


def test_profile_rejects_a_non_onnx_file(tmp_path):
    bogus = tmp_path / "model.onnx"
    bogus.write_text("not a model")
    assert "not a valid ONNX file" in one_line_error(cli("profile", str(bogus), "--runs", "1"))


def test_checkpoint_mismatch_names_keys(tmp_path, write_recipe):
    import torch

    from edgekd.models import build_model
    from edgekd.recipe.schema import ModelSpec

    ckpt = tmp_path / "wrong.pt"
    torch.save(build_model(ModelSpec(name="resnet32"), 10, 1).state_dict(), ckpt)
    recipe = write_recipe(f"teacher: {{model: {{name: resnet20}}, checkpoint: {ckpt}}}\n")
    line = one_line_error(cli("compress", str(recipe), "--out", str(tmp_path / "o")))
    assert "does not match the model" in line and "unexpected" in line
    assert not any((tmp_path / "o" / name).exists() for name in FINAL_ARTIFACTS)


def test_version_and_help():
    proc = cli("--version")
    assert proc.returncode == 0 and "edgekd" in proc.stdout
    proc = cli("compress", "--help")
    assert proc.returncode == 0 and "--set" in proc.stdout


def test_train_command_writes_a_verifiable_teacher(tmp_path, write_recipe):
    import hashlib

    import torch

    recipe = write_recipe("teacher: {model: {name: resnet20, args: {width: 4}}}\ntrain: {epochs: 1}\n")
    out = tmp_path / "teacher"
    proc = cli(
        "train",
        str(recipe),
        "--out",
        str(out),
        "--json",
        "--set",
        "data.train_limit=512",
        "--set",
        "data.eval_limit=256",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    provenance = json.loads((out / "teacher.json").read_text())
    digest = hashlib.sha256((out / "teacher.pt").read_bytes()).hexdigest()
    assert result["sha256"] == provenance["sha256"] == digest
    assert 0.0 <= provenance["metrics"]["accuracy"] <= 1.0 and len(provenance["history"]) == 1
    state = torch.load(
        out / "teacher.pt", weights_only=True
    )  # a plain state dict: loads without pickled code
    assert "fc.weight" in state

    # teacher.json's metrics are those of the shipped weights, re-evaluated from its own resolved recipe
    from edgekd.data import build_data
    from edgekd.engine.evaluate import evaluate_model
    from edgekd.recipe import recipe_from_dict
    from edgekd.tasks import get_task
    from edgekd.teacher import build_teacher

    resolved = recipe_from_dict(provenance["recipe"])
    resolved = resolved.model_copy(
        update={"teacher": resolved.teacher.model_copy(update={"checkpoint": out / "teacher.pt"})}
    )
    data = build_data(resolved.data)
    task = get_task(resolved.task, data)
    metrics = evaluate_model(build_teacher(resolved, data), data.eval_loader(100), task)
    assert metrics == pytest.approx(provenance["metrics"], abs=1e-9)


def test_train_resume_from_a_corrupt_epoch_checkpoint_is_one_line_exit_2(tmp_path, write_recipe):
    recipe = write_recipe("teacher: {model: {name: resnet20, args: {width: 4}}}\ntrain: {epochs: 1}\n")
    out = tmp_path / "teacher"
    (out / "state").mkdir(parents=True)
    (out / "state" / "train-last.pt").write_bytes(b"PK\x03\x04 truncated by a full disk")
    proc = cli("train", str(recipe), "--out", str(out), "--resume", "--set", "data.train_limit=256")
    line = one_line_error(proc, code=2)
    assert "train-last.pt: corrupt or truncated checkpoint" in line and "without --resume" in line


def test_stage_commands_chain_through_the_run_directory(tmp_path):
    from edgekd.models.student_file import read_student_meta

    out = tmp_path / "staged"
    proc = cli("prune", str(QUICKSTART), "--out", str(out), "--json", *SMALL_KD_RUN)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert abs(json.loads(proc.stdout)["macs_reduction"] - 0.75) <= 0.01
    pruned_sha = (out / "student.pt").read_bytes()
    proc = cli("distill", str(QUICKSTART), "--out", str(out), "--json", *SMALL_KD_RUN)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(json.loads(proc.stdout)["history"]) == 1
    assert (out / "student.pt").read_bytes() != pruned_sha  # distilled weights replaced the pruned ones
    meta = read_student_meta(out / "student.pt")
    assert meta["prune"]["importance"] == "group_l2" and meta["metrics"]["accuracy"] > 0
    proc = cli("export", str(out / "student.pt"), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["parity"]["passed"] and (out / "student.onnx").is_file()
