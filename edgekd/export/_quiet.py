"""Keep the exporter's and the simplifier's chatter off the user's console, but not out of the log.

Why file-descriptor level: ``torch.onnx``'s TorchScript exporter writes its IR dump from C++ straight to
file descriptor 2 when an export fails (``_jit_onnx_log``; its "logging enabled" check is always true in
torch 2.14), and onnxsim prints progress from both Python and C++. ``contextlib.redirect_stdout`` only sees
Python writes, so this swaps descriptors 1 and 2 for a temporary file while the noisy call runs. The captured
text goes to the ``edgekd.export`` debug log (``edgekd.log``), so nothing is lost for a bug report.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator

log = logging.getLogger("edgekd.export")


class Captured:
    """What a silenced call wrote; ``text`` is filled in when the ``quiet`` block exits."""

    text: str = ""


@contextlib.contextmanager
def quiet(what: str) -> Iterator[Captured]:
    """Silence warnings, Python prints and C-level writes to stdout/stderr inside the block.

    Args:
        what: Names the silenced step in the debug log (``"torch.onnx.export"``).

    Yields:
        A :class:`Captured` whose ``text`` holds everything written, once the block has exited (also on error,
        so a caller can mine it for the failing operator).
    """
    captured = Captured()
    py_out = io.StringIO()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = _redirect_fds(sink)
        try:
            with (
                warnings.catch_warnings(),
                contextlib.redirect_stdout(py_out),
                contextlib.redirect_stderr(py_out),
            ):
                warnings.simplefilter("ignore")
                yield captured
        finally:
            _restore_fds(saved)
            sink.seek(0)
            captured.text = py_out.getvalue() + sink.read().decode("utf-8", errors="replace")
            if captured.text.strip():
                log.debug("%s output:\n%s", what, captured.text.rstrip())


def _redirect_fds(sink: tempfile._TemporaryFileWrapper) -> list[tuple[int, int]]:  # type: ignore[type-arg]
    """Point fds 1 and 2 at ``sink``; return (fd, saved copy) pairs. Missing descriptors are left alone."""
    saved: list[tuple[int, int]] = []
    for stream, fd in ((sys.__stdout__, 1), (sys.__stderr__, 2)):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            if stream is not None:
                stream.flush()
            saved.append((fd, os.dup(fd)))
            os.dup2(sink.fileno(), fd)
    return saved


def _restore_fds(saved: list[tuple[int, int]]) -> None:
    with contextlib.suppress(Exception):  # C stdio buffers would otherwise flush onto the console later
        ctypes.CDLL(None).fflush(None)
    for fd, copy in saved:
        os.dup2(copy, fd)
        os.close(copy)
