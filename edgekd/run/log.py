"""The run's log file, its stage clock, and what a failed run leaves in its directory.

The log is the one file of a run not written atomically: it is meant to be read while the run is going, and a
killed run's log is most useful exactly as far as it got. A resumed run appends to it. A run that fails ends
its log with the error (one line, as the console shows it) and, at DEBUG level, the traceback: the console
shows that only under ``--debug``, and a log that stops without saying why sends the user to rerun it.

A run that fails before writing any result takes back its set-up (:func:`open_run`), so a typo in a recipe
does not leave an empty run directory behind that looks like a run.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgekd.errors import EdgekdError, InputError
from edgekd.io import RunLock
from edgekd.rundir import LOG, RECIPE, RunDir

log = logging.getLogger("edgekd")

# What every run writes before its first stage: not results, and taken back by a run that failed before any.
SETUP_FILES = frozenset({".lock", LOG, RECIPE})


@contextlib.contextmanager
def stage_clock(name: str) -> Iterator[dict[str, Any]]:
    """Time the ``with`` body as stage ``name``; the yielded dict becomes its ``report.json["stages"]`` entry.

    The body adds what the stage reports beside its duration; ``seconds`` is filled in on exit (a reused
    stage may set its own, from its marker).
    """
    entry: dict[str, Any] = {}
    log.info("── %s", name)
    start = time.perf_counter()
    try:
        yield entry
    finally:
        seconds = entry.pop("seconds", round(time.perf_counter() - start, 3))
        reported = dict(entry)
        entry.clear()
        entry.update(seconds=seconds, **reported)  # seconds first, as report.json has always listed it


@contextlib.contextmanager
def run_log(path: Path, append: bool = True) -> Iterator[None]:
    """Mirror the ``edgekd`` logger (all levels) into ``RUN/edgekd.log`` for the run's duration.

    An exception leaving the ``with`` body is logged into the file before it closes (:func:`_log_failure`).
    """
    handler = logging.FileHandler(path, mode="a" if append else "w", encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("edgekd")
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield
    except BaseException as exc:
        _log_failure(handler, exc)
        raise
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()


def failure_line(exc: BaseException) -> str:
    """The one line the CLI prints for ``exc`` (:mod:`edgekd.cli.policy`), without the ``edgekd:`` prefix."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    text = " ".join(str(exc).split())
    if isinstance(exc, EdgekdError):
        return f"error: {text}"
    return f"internal error: {type(exc).__name__}: {text[:300]}"


def _log_failure(handler: logging.Handler, exc: BaseException) -> None:
    """Write the error that ends the run to the log file alone: the console gets it once, from the CLI."""
    if isinstance(exc, SystemExit | GeneratorExit):  # not failures of the run (a rank handing over, a close)
        return
    records = (
        (logging.ERROR, failure_line(exc), None),
        (logging.DEBUG, "traceback of the error above:", (type(exc), exc, exc.__traceback__)),
    )
    for level, message, exc_info in records:
        handler.handle(log.makeRecord(log.name, level, __file__, 0, message, (), exc_info))


@contextlib.contextmanager
def open_run(out: Path) -> Iterator[RunDir]:
    """Create and lock the run directory ``out`` for one command; a failure before any result takes it back.

    "Nothing half-written": the set-up every run makes first (the directory, ``plots/``, ``state/``, the
    lock, ``edgekd.log``, ``recipe.yaml``) is not a result. When the body fails and the directory is one this
    run created with no result in it, it is removed whole, with the parents this run created for it (when
    empty): the input was wrong or the run could not start,
    the console said why, and a run directory holding no run would only look like one (``--resume`` would
    take it for one). Otherwise only the empty ``plots/`` and ``state/`` this run made are removed: a
    directory that existed keeps its log with the error, and a stage's files (a checkpoint, a marker, an
    artifact) stay for ``--resume``. The clean-up runs before the lock is released, so no other run can have
    started writing there.
    """
    run = RunDir(out)
    for path in (run.root, *run.root.parents):
        if path.exists() and not path.is_dir():
            raise InputError(f"--out {out}: {path} is a file, not a directory; choose another --out")
    created = [d for d in (run.plots, run.state) if not d.exists()]
    created += _missing_ancestors(run.root)  # the directory itself first, then the parents made for it
    run.create()
    with RunLock(run.root):
        try:
            yield run
        except BaseException:
            _take_back(run, created)
            raise


def _missing_ancestors(root: Path) -> list[Path]:
    """``root`` and its parents that do not exist yet, deepest first."""
    missing, path = [], root.absolute()
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _take_back(run: RunDir, created: list[Path]) -> None:
    """Remove what a failed run set up in ``created`` (best effort: the failure itself is what matters)."""
    if run.root.absolute() in created and not any(
        path.is_file() and path.relative_to(run.root).as_posix() not in SETUP_FILES
        for path in run.root.rglob("*")
    ):
        shutil.rmtree(run.root, ignore_errors=True)
    for directory in created:  # plots/, state/, then the directory and its new parents, deepest first
        with contextlib.suppress(OSError):
            directory.rmdir()  # only an empty one: rmdir refuses anything else
