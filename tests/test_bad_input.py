"""A corpus of bad inputs through the real entry point: one line on stderr, the right exit code, no artifact.

Every case runs ``python -m edgekd`` in a fresh process and checks that it exits 2 (bad input) or 1 (runtime,
e.g. a full disk), prints exactly one ``edgekd: error:`` line naming the problem (no traceback), and leaves no
file under a final artifact name (nor a temporary) in the run directory.
"""

from __future__ import annotations

import gzip
import re
import resource
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import EDGEKD, QUICKSTART, REPO, TEACHER, cli, one_line_error

FINAL = (
    "teacher.onnx",
    "student.pt",
    "student.onnx",
    "teacher.pt",
    "report.json",
    "report.md",
    "report.html",
)
TINY = "data:\n  train_limit: 256\n  eval_limit: 128\n"  # block style: cases append "  root: DIR"
TRAIN_RECIPE = REPO / "recipes" / "teachers" / "fmnist_resnet20.train.yaml"


def assert_no_artifacts(out: Path) -> None:
    left = [name for name in FINAL if (out / name).exists()]
    assert not left, f"artifacts under final names after a failure: {left}"
    if out.exists():
        assert not list(out.rglob("*.edgekd-tmp"))


# -- models used through `package.module:factory` (importable from the repo root, where the CLI runs) --------


class _HardCodedHead(nn.Module):
    """Flattens with a hard-coded channel count: fine until the conv before it loses channels."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8 * 14 * 14, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.reshape(x.shape[0], 8 * 14 * 14))


class _BreaksWhenPruned(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, 2, 1)
        self.head = _HardCodedHead()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x))


class _ExtraOutput(_BreaksWhenPruned):
    """Returns ``(logits, 3)``: evaluates fine, but tracers (MACs counter, torch-pruning) cannot follow the 3."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        return self.head(self.conv(x)), 3


def breaks_when_pruned() -> nn.Module:
    return _BreaksWhenPruned()


def untraceable() -> nn.Module:
    return _ExtraOutput()


# -- inputs ----------------------------------------------------------------------------------------------------


def idx_file(path: Path, shape: tuple[int, ...], payload: int | None = None) -> Path:
    """An IDX (unsigned byte) file with ``shape`` in its header and ``payload`` bytes of data (default: all)."""
    count = int(torch.tensor(shape).prod()) if shape else 0
    header = bytes([0, 0, 8, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + bytes(count if payload is None else payload))
    return path


def dataset(root: Path, train_images: tuple[int, ...], train_labels: int, payload: int | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    idx_file(root / "train-images-idx3-ubyte.gz", train_images, payload)
    idx_file(root / "train-labels-idx1-ubyte.gz", (train_labels,))
    idx_file(root / "t10k-images-idx3-ubyte.gz", (16, 28, 28))
    idx_file(root / "t10k-labels-idx1-ubyte.gz", (16,))
    return root


def teacher_recipe(
    tmp: Path, checkpoint: Path | None = TEACHER, model: str = "{name: resnet20}", extra: str = ""
) -> Path:
    """A recipe for the shipped teacher (or ``model``) on a tiny subset; ``extra`` is appended after ``data:``."""
    ckpt = f", checkpoint: {checkpoint}" if checkpoint else ""
    path = tmp / "recipe.yaml"
    path.write_text(f"teacher: {{model: {model}{ckpt}}}\n{TINY}{extra}")
    return path


def checkpoint_file(tmp: Path, content: bytes | object) -> Path:
    path = tmp / "teacher.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    return path


def resnet32_weights() -> dict:
    from edgekd.models import build_model
    from edgekd.recipe.schema import ModelSpec

    return build_model(ModelSpec(name="resnet32"), 10, 1).state_dict()


# Each case: (tmp_path) -> (recipe text or path, extra CLI args); all run `compress` and must exit 2.
RECIPE_CASES: dict[str, tuple[Callable[[Path], tuple[Path, list[str]]], str]] = {
    "malformed_yaml": (
        lambda t: (_text(t, "teacher: {model: {name: resnet20}\nprune: [1, 2\n"), []),
        "malformed YAML at line",
    ),
    "unknown_key": (
        lambda t: (teacher_recipe(t, extra="prune: {importnce: group_l1}\n"), []),
        "'importance'",
    ),
    "wrong_type": (lambda t: (teacher_recipe(t, extra="distill: {epochs: many}\n"), []), "distill.epochs"),
    "out_of_range_ratio": (
        lambda t: (teacher_recipe(t, extra="prune: {reduction: 1.5}\n"), []),
        "prune.reduction",
    ),
    "unknown_model": (
        lambda t: (teacher_recipe(t, model="{name: resnet21}"), []),
        "unknown model 'resnet21'",
    ),
    "bad_override": (lambda t: (teacher_recipe(t), ["--set", "prune"]), "expected section.key=value"),
    # a value that came from --set is blamed on that --set, not on the recipe file (issue 15)
    "bad_value_from_set": (
        lambda t: (teacher_recipe(t), ["--set", "distill.epochs=many"]),
        "edgekd: error: --set distill.epochs=many: distill.epochs: Input should be a valid integer",
    ),
    "unknown_loss_from_set": (
        lambda t: (teacher_recipe(t), ["--set", "distill.losses.0.name=kdd"]),
        "edgekd: error: --set distill.losses.0.name=kdd: distill.losses.0.name: unknown loss 'kdd'",
    ),
    # an index past a list the recipe leaves at its default: one line naming the defaults (issue 15)
    "set_index_past_the_default_list": (
        lambda t: (teacher_recipe(t), ["--set", "distill.losses.5.temperature=2"]),
        "--set distill.losses.5.temperature=2: distill.losses has 2 entries (the defaults: ce, kd); "
        "index 5 does not exist",
    ),
    "force_without_resume": (lambda t: (teacher_recipe(t), ["--force"]), "--force only applies to --resume"),
    "missing_recipe": (lambda t: (t / "nope.yaml", []), "recipe not found"),
    "missing_checkpoint": (lambda t: (teacher_recipe(t, t / "nope.pt"), []), "checkpoint not found"),
    "checkpoint_mismatch": (
        lambda t: (teacher_recipe(t, checkpoint_file(t, resnet32_weights())), []),
        "does not match the model: unexpected",
    ),
    "truncated_checkpoint": (
        lambda t: (
            teacher_recipe(t, checkpoint_file(t, TEACHER.read_bytes()[: TEACHER.stat().st_size // 2])),
            [],
        ),
        "corrupt or truncated checkpoint",
    ),
    "garbage_checkpoint": (
        lambda t: (teacher_recipe(t, checkpoint_file(t, b"not a checkpoint\n")), []),
        "not a PyTorch checkpoint",
    ),
    "checkpoint_not_a_dict": (
        lambda t: (teacher_recipe(t, checkpoint_file(t, [torch.zeros(2)])), []),
        "expected a state dict, found list",
    ),
    "checkpoint_without_tensors": (
        lambda t: (teacher_recipe(t, checkpoint_file(t, {"epoch": 3})), []),
        "no tensors found",
    ),
    "model_rejects_the_data": (
        lambda t: (teacher_recipe(t, None, "{name: resnet20, in_channels: 3}"), []),
        "teacher.model fails a forward pass in module 'stem.0'",
    ),
    "breaks_when_pruned": (
        lambda t: (
            teacher_recipe(
                t, None, "{name: 'tests.test_bad_input:breaks_when_pruned'}", "prune: {round_to: null}\n"
            ),
            [],
        ),
        "the pruned model fails a forward pass in module 'head'",
    ),
    "untraceable_model": (
        lambda t: (teacher_recipe(t, None, "{name: 'tests.test_bad_input:untraceable'}"), []),
        "cannot trace the model (RuntimeError: output 1",
    ),
    "empty_dataset": (
        lambda t: (teacher_recipe(t, extra=f"  root: {dataset(t / 'd', (0, 28, 28), 0)}\n"), []),
        "empty",
    ),
    "wrongly_shaped_dataset": (
        lambda t: (teacher_recipe(t, extra=f"  root: {dataset(t / 'd', (16, 784), 16)}\n"), []),
        "N×C×H×W",
    ),
    "images_without_labels": (
        lambda t: (teacher_recipe(t, extra=f"  root: {dataset(t / 'd', (16, 28, 28), 8)}\n"), []),
        "16 images but 8 targets",
    ),
    "truncated_dataset": (
        lambda t: (
            teacher_recipe(t, extra=f"  root: {dataset(t / 'd', (16, 28, 28), 16, payload=100)}\n"),
            [],
        ),
        "truncated IDX file",
    ),
}


def _text(tmp: Path, text: str) -> Path:
    path = tmp / "recipe.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", list(RECIPE_CASES))
def test_bad_compress_input_is_one_line_exit_2_and_no_artifact(case, tmp_path):
    make, expected = RECIPE_CASES[case]
    recipe, extra = make(tmp_path)
    out = tmp_path / "run"
    line = one_line_error(cli("compress", str(recipe), "--out", str(out), *extra))
    assert expected in line, line
    assert_no_artifacts(out)


def test_the_dataset_cases_really_replace_the_data_section(tmp_path):
    """The corpus appends ``root:`` under ``data:``: check that it parses as intended."""
    from edgekd.recipe import load_recipe

    recipe = load_recipe(teacher_recipe(tmp_path, extra="  root: /x\n"))
    assert str(recipe.data.root) == "/x" and recipe.data.train_limit == 256


# -- ONNX files and student files ------------------------------------------------------------------------------


def onnx_bytes(op: str = "Relu", empty: bool = False) -> bytes:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((64, 64), dtype=np.float32), "w")
    nodes = (
        [] if empty else [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node(op, ["h"], ["y"])]
    )
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return model.SerializeToString()


ONNX_CASES = {
    "text_file": (lambda: b"not a model\n", "not a valid ONNX file"),
    "truncated": (lambda: onnx_bytes()[: len(onnx_bytes()) // 2], "not a valid ONNX file"),
    "empty_graph": (lambda: onnx_bytes(empty=True), "empty graph"),
    "unknown_operator": (lambda: onnx_bytes(op="NoSuchOp"), "ONNX checker rejected the model"),
}


@pytest.mark.parametrize("case", list(ONNX_CASES))
def test_bad_onnx_file_is_refused_before_use(case, tmp_path):
    make, expected = ONNX_CASES[case]
    model = tmp_path / "model.onnx"
    model.write_bytes(make())
    line = one_line_error(cli("profile", str(model), "--runs", "1", "--threads", "1"))
    assert expected in line and "model.onnx" in line, line


def test_valid_onnx_control_case_profiles(tmp_path):
    """The corpus' valid model passes the same checks, so the failures above are about the damage."""
    model = tmp_path / "model.onnx"
    model.write_bytes(onnx_bytes())
    proc = cli("profile", str(model), "--runs", "1", "--threads", "1", "--warmup", "0")
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_truncated_student_file_is_refused_by_export(tmp_path):
    from edgekd.models import build_model
    from edgekd.models.student_file import save_student
    from edgekd.recipe.schema import ModelSpec

    spec = ModelSpec(name="resnet20", args={"width": 4})
    student = tmp_path / "in" / "student.pt"
    save_student(student, build_model(spec, 10, 1), spec, 10, 1, meta={"recipe": {}})
    student.write_bytes(student.read_bytes()[: student.stat().st_size // 2])
    out = tmp_path / "out"
    line = one_line_error(cli("export", str(student), "--out", str(out)))
    assert "corrupt or truncated student file" in line, line
    assert_no_artifacts(out)


# -- pickled code ------------------------------------------------------------------------------------------------


class _RunsCode:
    """Unpickles as ``exec(...)``: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


@pytest.mark.parametrize("command", ["compress", "prune", "train"])
def test_checkpoint_that_runs_code_is_refused_and_the_code_never_runs(command, tmp_path):
    marker = tmp_path / "code-ran"
    ckpt = checkpoint_file(tmp_path, {"state_dict": {}, "payload": _RunsCode(marker)})
    out = tmp_path / "run"
    line = one_line_error(cli(command, str(teacher_recipe(tmp_path, ckpt)), "--out", str(out)))
    assert "refused to load checkpoint: it references exec" in line and "--trust-checkpoint" in line, line
    assert not marker.exists()
    assert_no_artifacts(out)


def test_trust_checkpoint_is_the_explicit_opt_in(tmp_path):
    """With the flag the same file is unpickled (the code runs): proof the refusal above was the guard."""
    marker = tmp_path / "code-ran"
    ckpt = checkpoint_file(tmp_path, {"state_dict": {}, "payload": _RunsCode(marker)})
    out = tmp_path / "run"
    recipe = teacher_recipe(tmp_path, ckpt)
    line = one_line_error(cli("compress", str(recipe), "--out", str(out), "--trust-checkpoint"))
    assert marker.exists() and "no tensors found" in line, line


# -- a full disk, for real ---------------------------------------------------------------------------------------


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))  # Python ignores SIGXFSZ: EFBIG


def test_file_size_limit_while_writing_a_checkpoint_is_exit_1_and_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    args = ("train", str(TRAIN_RECIPE), "--out", str(out), "--set", "train.epochs=1")
    proc = cli(
        *args, "--set", "data.train_limit=256", "--set", "data.eval_limit=128", preexec=_limit_file_size
    )
    line = one_line_error(proc, code=1)
    assert "file size limit reached while writing" in line and "train-last.pt" in line, line
    assert_no_artifacts(out)


def test_disk_full_while_writing_a_checkpoint_is_exit_1_and_leaves_nothing(tmp_path):
    """A real full disk: a 512 KiB tmpfs (needs root, as CI and tools/setup.sh run; fails, never skips)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], capture_output=True
    )
    assert mounted.returncode == 0, f"cannot mount a tmpfs (run the suite as root): {mounted.stderr!r}"
    try:
        out = mount / "run"
        args = ("train", str(TRAIN_RECIPE), "--out", str(out), "--set", "train.epochs=1")
        line = one_line_error(
            cli(*args, "--set", "data.train_limit=256", "--set", "data.eval_limit=128"), code=1
        )
        assert "disk full while writing" in line and "train-last.pt" in line, line
        assert_no_artifacts(out)
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# -- the small things (issue 15) ---------------------------------------------------------------------------------


def test_bare_edgekd_prints_its_help_on_stdout_and_exits_0():
    bare, flag = cli(), cli("--help")
    assert bare.returncode == 0 and bare.stderr == "", bare.stderr
    assert bare.stdout.startswith("Usage: edgekd") and bare.stdout == flag.stdout


def test_help_command_is_the_help_flag():
    assert cli("help").stdout == cli("--help").stdout
    for command in ("compress", "profile", "report"):
        proc = cli("help", command)
        assert proc.returncode == 0 and proc.stdout == cli(command, "--help").stdout, proc.stderr
    line = one_line_error(cli("help", "comprss"))
    assert "no command 'comprss'; did you mean 'compress'?" in line, line


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash_source", "complete -o nosort -F _edgekd_completion edgekd"),
        ("zsh_source", "#compdef edgekd"),
        ("fish_source", "complete --no-files --command edgekd"),
    ],
)
def test_shell_completion_script_is_produced(shell, marker):
    """What the README tells users to eval: click's completion script for ``edgekd``."""
    proc = cli(launcher=("env", f"_EDGEKD_COMPLETE={shell}", *EDGEKD))
    assert proc.returncode == 0 and marker in proc.stdout, (proc.stdout[:500], proc.stderr[-500:])


def test_shell_completion_completes_command_names():
    env = ("env", "_EDGEKD_COMPLETE=bash_complete", "COMP_WORDS=edgekd comp", "COMP_CWORD=1")
    proc = cli(launcher=(*env, *EDGEKD))
    assert proc.returncode == 0 and proc.stdout.split() == ["plain,compress"], proc.stdout


def test_report_of_a_directory_without_a_run_names_the_real_command(tmp_path):
    line = one_line_error(cli("report", str(tmp_path)))
    assert f"run `edgekd compress RECIPE --out {tmp_path}` first" in line and "edgekd run)" not in line, line


def test_profile_gate_failure_points_at_no_report(tmp_path):
    """``profile`` writes no report.md, so its gate error must not send the user looking for one."""
    model = tmp_path / "model.onnx"
    model.write_bytes(onnx_bytes())
    args = ("profile", str(model), "--runs", "1", "--threads", "1", "--warmup", "0", "--max-ms", "p50=1e-9")
    line = one_line_error(cli(*args), code=3)
    assert "1 of 1 deploy gate(s) failed: max_latency_ms:model.onnx@local" in line, line
    assert "report" not in line and not list(tmp_path.glob("report*")), line


def test_compress_gate_failure_still_points_at_its_report():
    from edgekd.errors import GateError
    from edgekd.report.gates import raise_if_failed
    from edgekd.results import Gate

    with pytest.raises(
        GateError, match=r"limit 1\); the run directory and report were written, see report\.md$"
    ):
        raise_if_failed([Gate("max_size_mb:student.onnx", 2.0, 1.0, False)], "report.md")


def test_set_tunes_an_entry_of_a_list_left_at_its_default(tmp_path):
    """The recipe lists no losses: ``--set distill.losses.1.temperature=2`` edits the default kd term."""
    from edgekd.run import load_recipe

    recipe = load_recipe(teacher_recipe(tmp_path), ["distill.losses.1.temperature=2", "profile.threads.1=4"])
    ce, kd = recipe.distill.losses
    assert (ce.name, ce.weight, kd.name, kd.weight) == ("ce", 0.1, "kd", 0.9)
    assert kd.params == {"temperature": 2} and recipe.profile.threads == [1, 4]


def test_set_into_a_list_by_name_is_one_clear_line(tmp_path):
    out = tmp_path / "run"
    line = one_line_error(
        cli(
            "compress",
            str(teacher_recipe(tmp_path)),
            "--out",
            str(out),
            "--set",
            "distill.losses.kd.weight=1",
        )
    )
    assert "distill.losses is a list (the defaults: ce, kd); 'kd' is not an index of it" in line, line
    assert not out.exists()


def test_refused_pickle_prints_no_torch_warning(tmp_path):
    """A plain pickle (protocol 4) makes torch's safe loader warn over two lines before it refuses the file."""
    marker = tmp_path / "code-ran"
    ckpt = tmp_path / "teacher.pt"
    torch.save({"state_dict": {}, "payload": _RunsCode(marker)}, ckpt, pickle_protocol=4)
    with pytest.warns(UserWarning, match="Detected pickle protocol 4"), pytest.raises(Exception):  # noqa: B017
        torch.load(ckpt, weights_only=True)  # the control: torch itself still warns
    warnings_on = ("env", "-u", "PYTHONWARNINGS", sys.executable, "-W", "default", "-m", "edgekd")
    proc = cli(
        "prune", str(teacher_recipe(tmp_path, ckpt)), "--out", str(tmp_path / "run"), launcher=warnings_on
    )
    line = one_line_error(proc)
    assert proc.stderr.strip() == line and "--trust-checkpoint" in line, proc.stderr
    assert not marker.exists()


# -- a failed run: its error is logged, and it leaves no half-created directory -----------------------------------


@pytest.mark.parametrize("command", ["compress", "prune"])
def test_failed_run_leaves_no_directory_it_created(command, tmp_path):
    """A bad teacher checkpoint fails before any result: the run directory the run created is taken back."""
    ckpt = checkpoint_file(tmp_path, {"epoch": 3})
    out = tmp_path / "runs" / "new"
    line = one_line_error(cli(command, str(teacher_recipe(tmp_path, ckpt)), "--out", str(out)))
    assert "no tensors found" in line, line
    assert not (tmp_path / "runs").exists()  # nor the parent created for it


def test_failed_run_in_an_existing_directory_logs_the_error_and_removes_its_empty_dirs(tmp_path):
    ckpt = checkpoint_file(tmp_path, {"epoch": 3})
    out = tmp_path / "run"
    out.mkdir()
    (out / "mine.txt").write_text("the user's own file")
    line = one_line_error(cli("compress", str(teacher_recipe(tmp_path, ckpt)), "--out", str(out)))
    log = (out / "edgekd.log").read_text()
    errors = re.findall(r"^\S+ \S+ ERROR edgekd: (.*)$", log, re.M)
    assert errors == [line.removeprefix("edgekd: ")], log
    assert re.search(r"DEBUG edgekd: traceback of the error above:\nTraceback", log), log
    assert not (out / "plots").exists() and not (out / "state").exists()
    assert (out / "mine.txt").read_text() == "the user's own file" and not (out / "recipe.yaml").exists()


def test_failed_new_run_leaves_the_previous_run_in_its_directory_whole(tmp_path):
    """A fresh compress replaces a previous run only once its own data and teacher load: a bad checkpoint must
    not cost the user the results already there (nor their recipe.yaml, which says what produced them)."""
    ckpt = checkpoint_file(tmp_path, {"epoch": 3})
    out = tmp_path / "run"
    (out / "state").mkdir(parents=True)
    previous = {
        "recipe.yaml": "seed: 7\n",
        "report.json": "{}",
        "student.onnx": "onnx",
        "state/prune.done.json": "{}",
    }
    for name, text in previous.items():
        (out / name).write_text(text)
    one_line_error(cli("compress", str(teacher_recipe(tmp_path, ckpt)), "--out", str(out)))
    assert {name: (out / name).read_text() for name in previous} == previous


def test_failed_run_keeps_what_a_stage_wrote(tmp_path):
    """Past the first result the directory stays, for --resume, with the error at the end of its log."""
    from edgekd.errors import InputError
    from edgekd.run.log import open_run, run_log

    out = tmp_path / "run"
    with pytest.raises(InputError), open_run(out) as run, run_log(run.log):
        (run.state / "pruned.pt").write_bytes(b"a result")
        raise InputError("the data went away")
    assert (out / "state" / "pruned.pt").read_bytes() == b"a result"
    assert "ERROR edgekd: error: the data went away" in (out / "edgekd.log").read_text()
    assert not (out / "plots").exists()


# -- the run-directory contract doc ----------------------------------------------------------------------------

CONTRACT_DOC = REPO / "docs" / "run-directory.md"
_DOC_KEY_ROW = re.compile(r"^\| `(\w+)` \| (required|optional) \|", re.M)
_DOC_OTHER_ROW = re.compile(r"^\| `(\w+)` \| (?!required|optional)", re.M)


def test_run_directory_doc_lists_exactly_the_report_schema_keys():
    """docs/run-directory.md's key table and edgekd/report/schema.py cannot drift apart."""
    from edgekd.report.schema import Report

    text = CONTRACT_DOC.read_text()
    documented = dict(_DOC_KEY_ROW.findall(text))
    schema = {name: "required" if f.is_required() else "optional" for name, f in Report.model_fields.items()}
    assert documented == schema, f"doc {documented} vs schema {schema}"
    others = set(_DOC_OTHER_ROW.findall(text))
    assert others and not others & set(schema), (
        f"documented as outside the schema but in it: {others & set(schema)}"
    )


def test_run_directory_doc_names_every_nested_report_key_and_run_file():
    from pydantic import BaseModel

    from edgekd import rundir
    from edgekd.report.schema import Report

    words = set(re.findall(r"[\w.]+", CONTRACT_DOC.read_text()))
    models, missing = [Report], []
    while models:
        model = models.pop()
        for name, field in model.model_fields.items():
            missing += [] if name in words else [f"{model.__name__}.{name}"]
            models += [m for m in _models_in(field.annotation) if issubclass(m, BaseModel)]
    files = [v for k, v in vars(rundir).items() if k.isupper() and isinstance(v, str)]
    missing += [f for f in files if f not in words]
    assert not missing, f"docs/run-directory.md does not name: {missing}"


def _models_in(annotation: object) -> list[type]:
    from typing import get_args

    found = [annotation] if isinstance(annotation, type) else []
    return found + [m for arg in get_args(annotation) for m in _models_in(arg)]


def test_readme_links_the_contract_doc_and_nothing_cites_conventions_md():
    readme = (REPO / "README.md").read_text()
    assert "(docs/run-directory.md)" in readme
    citing = [
        str(p.relative_to(REPO))
        for p in [REPO / "README.md", *sorted((REPO / "edgekd").rglob("*.py"))]
        if "CONVENTIONS.md" in p.read_text()
    ]
    assert not citing, f"cite docs/run-directory.md instead of CONVENTIONS.md: {citing}"


def test_out_that_is_a_file_is_bad_input(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    line = one_line_error(cli("prune", str(QUICKSTART), "--out", str(taken)))
    assert "is a file, not a directory" in line and taken.read_text() == "mine"
