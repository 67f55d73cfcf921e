"""The CLI's error policy: an exception becomes one line on stderr and an exit code; ``--debug`` shows more.

Kept apart from the command list (:mod:`edgekd.cli`) so the one place that turns an exception into one line
and an exit code (README: exit codes) is small enough to audit.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import click

from edgekd.errors import EdgekdError

log = logging.getLogger("edgekd")


def setup_console_logging(debug: bool) -> None:
    if not any(getattr(h, "_edgekd_console", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._edgekd_console = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    for h in log.handlers:
        if getattr(h, "_edgekd_console", False):
            h.setLevel(logging.DEBUG if debug else logging.INFO)


def command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Give a subcommand ``--debug`` and the error policy: EdgekdError → one line + its exit code."""

    @click.option("--debug", is_flag=True, help="Show full tracebacks and debug logging.")
    @functools.wraps(fn)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        debug = debug or os.environ.get("EDGEKD_DEBUG") == "1"
        setup_console_logging(debug)
        try:
            return fn(*args, **kwargs)
        except EdgekdError as exc:
            if debug:
                traceback.print_exc()
            fail(f"edgekd: error: {one_line(str(exc))}", exc.exit_code)
        except KeyboardInterrupt:
            click.echo("edgekd: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # an unexpected failure is a bug: keep it one line unless --debug
            if debug:
                traceback.print_exc()
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            fail(
                f"edgekd: internal error: {type(exc).__name__}: {first[:300]} (rerun with --debug for the traceback)",
                1,
            )

    return wrapper


def fail(line: str, code: int) -> None:
    """Print the error line and exit; a rank of ``--nproc`` leaves the line to its launcher instead."""
    handed_over = False
    if os.environ.get("TORCHELASTIC_ERROR_FILE"):  # a torchrun worker (imports torch only then)
        from edgekd.engine.distributed import record_error

        handed_over = record_error(line, code)
    if not handed_over:
        click.echo(line, err=True)
    sys.exit(code)


def one_line(text: str) -> str:
    """Errors are one line on stderr whatever a message embeds (e.g. a YAML key holding a newline)."""
    return " ".join(text.split())
