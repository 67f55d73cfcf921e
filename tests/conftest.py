"""Shared fixtures: real Fashion-MNIST subsets, the shipped teacher, and the real CLI entry point."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "recipes" / "quickstart.yaml"
TEACHER = REPO / "recipes" / "teachers" / "fmnist_resnet20.pt"


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n 2``), one torch thread per worker.

    Why: each worker is meant to own a core. Two workers with torch's default of one thread per core run four
    threads on two cores, and OpenMP's spinning threads then cost more than the second worker gains (measured:
    the suite took as long on two such workers as serially). The CLI subprocesses already run on one thread.
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


EDGEKD = (sys.executable, "-m", "edgekd")  # the entry point, as `cli`'s default launcher runs it


def sets(*overrides: str) -> tuple[str, ...]:
    """Recipe overrides as command-line arguments: ``sets("a=1", "b=2") == ("--set", "a=1", "--set", "b=2")``."""
    return tuple(arg for override in overrides for arg in ("--set", override))


# The small-run overrides: every stage of `compress` runs once, on 512/256 images and one distillation epoch,
# with short profiling and parity checks. Tests append what they measure (rightmost `--set` wins), e.g.
# `(*SMALL_RUN, *sets("distill.epochs=2"))`.
SMALL_RUN = sets(
    "data.train_limit=512",
    "data.eval_limit=256",
    "distill.epochs=1",
    "profile.threads=[1]",
    "profile.runs=10",
    "profile.warmup=1",
    "export.parity_samples=64",
)

# The distillation the quickstart shipped with before issue 18 moved it to its 5-minute budget: CE + KD from
# the teacher on augmented batches, cosine to lr 0.02. Tests that run the quickstart to exercise the
# distillation path, and whose thresholds were measured with it, pin it through `SMALL_KD_RUN`.
QUICKSTART_KD = sets(
    "data.augment=true",
    "distill.lr=0.02",
    "distill.schedule=cosine",
    "distill.losses=[{name: ce, weight: 0.5}, {name: kd, weight: 0.5, temperature: 4.0}]",
)
SMALL_KD_RUN = (*SMALL_RUN, *QUICKSTART_KD)


def cli_env() -> dict[str, str]:
    """The environment of a CLI subprocess: this one's, without warnings or progress bars, on one torch thread.

    Why one thread: on a shared 2-core machine two threads per process oversubscribe the cores and run ~10x
    slower, and the thread count is part of what makes CPU float results repeatable from run to run.
    """
    return {**os.environ, "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}


def cli(
    *args: str,
    cwd: Path | None = None,
    timeout: float = 900,
    launcher: tuple[str, ...] = EDGEKD,
    preexec: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess:
    """Run ``python -m edgekd ARGS`` in a fresh process, as a user would; return it finished, output captured.

    ``launcher`` replaces ``python -m edgekd`` (e.g. with ``torchrun … -m edgekd``); ``preexec`` runs in the
    child before it starts (e.g. to set a resource limit). Plain ``edgekd`` commands run in a fork of a
    pre-imported interpreter (``tests/_forkserver.py``: the same entry point, without paying the imports again).
    """
    if launcher == EDGEKD and preexec is None and os.environ.get("EDGEKD_TEST_SUBPROCESS") != "1":
        return _FORKS.run(list(args), cwd or REPO, timeout)
    return subprocess.run(
        [*launcher, *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        timeout=timeout,
        env=cli_env(),
        preexec_fn=preexec,
    )


class _ForkServer:
    """The client side of ``tests/_forkserver.py``: started on first use, one command at a time."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.pending = b""

    def run(self, args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
        proc = self._started()
        with tempfile.TemporaryDirectory(prefix="edgekd-cli-") as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            request = {
                "args": args,
                "cwd": str(cwd),
                "env": cli_env(),
                "stdout": str(out),
                "stderr": str(err),
            }
            assert proc.stdin is not None
            proc.stdin.write((json.dumps(request) + "\n").encode())
            proc.stdin.flush()
            pid = self._reply(None)["pid"]
            try:
                code = self._reply(timeout)["returncode"]
            except subprocess.TimeoutExpired:
                os.killpg(pid, signal.SIGKILL)
                self._reply(None)
                raise subprocess.TimeoutExpired([*EDGEKD, *args], timeout) from None
            return subprocess.CompletedProcess([*EDGEKD, *args], code, out.read_text(), err.read_text())

    def _started(self) -> subprocess.Popen:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                [sys.executable, str(REPO / "tests" / "_forkserver.py")],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                cwd=REPO,
                env=cli_env(),
            )
            self.pending = b""
        return self.proc

    def _reply(self, timeout: float | None) -> dict:
        """The server's next reply line, read from the raw pipe (no buffered read-ahead to hide from select)."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.pending:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([fd], [], [], wait)[0]:
                raise subprocess.TimeoutExpired("edgekd", timeout or 0)
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(
                    "the test fork server died; rerun with EDGEKD_TEST_SUBPROCESS=1 to see why"
                )
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)


_FORKS = _ForkServer()


def one_line_error(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    """Assert a CLI failure: exit ``code``, one ``edgekd: error:`` line (the last on stderr), no traceback.

    Progress lines of stages that ran before the failure may precede it; the error itself is one line.
    """
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("edgekd: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr[-2000:]
    return errors[0]


@pytest.fixture(scope="session")
def small_data():
    from edgekd.data import build_data
    from edgekd.recipe.schema import DataConfig

    return build_data(DataConfig(train_limit=1024, eval_limit=512))


@pytest.fixture()
def write_recipe(tmp_path):
    """Write YAML text to a recipe file in tmp_path and return its path."""

    def _write(text: str, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return _write


def run_context(bundle, teachers, task: str = "classification", **sections):
    """A :class:`~edgekd.context.RunContext` for library-level tests: ``bundle`` (a DataBundle) and ``teachers``, the
    recipe's other sections at their defaults unless passed (e.g. ``distill=DistillConfig(...)``)."""
    import tempfile

    from edgekd.context import RunContext
    from edgekd.recipe.schema import Recipe
    from edgekd.rundir import RunDir
    from edgekd.tasks import get_task

    recipe = Recipe(task=task, teacher={"model": {"name": "resnet20"}}, **sections)
    run = RunDir(Path(tempfile.mkdtemp(prefix="edgekd-test-")))
    return RunContext(
        recipe=recipe, run=run, data=bundle, task=get_task(task, bundle), teachers=tuple(teachers)
    )


@pytest.fixture
def edgekd_main(monkeypatch, capsys):
    """``edgekd ARGS`` through the entry point (:func:`edgekd.cli.main`) in this process → (code, out, err).

    In-process because the command's own work takes well under a second, while a fresh interpreter spends
    several importing torch. The console log handler a command adds (on capsys' stream) is dropped after.
    """
    import logging

    from edgekd.cli import main

    log = logging.getLogger("edgekd")
    level = log.level
    monkeypatch.setattr(log, "handlers", [])

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["edgekd", *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code
        out = capsys.readouterr()
        return code, out.out, out.err

    yield run
    log.setLevel(level)
