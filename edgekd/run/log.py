"""The run's log file and its stage clock.

The log is the one file of a run not written atomically: it is meant to be read while the run is going, and a
killed run's log is most useful exactly as far as it got. A resumed run appends to it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("edgekd")


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
    """Mirror the ``edgekd`` logger (all levels) into ``RUN/edgekd.log`` for the run's duration."""
    handler = logging.FileHandler(path, mode="a" if append else "w", encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("edgekd")
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()
