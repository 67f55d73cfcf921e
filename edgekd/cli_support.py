"""What every ``edgekd`` command shares: the error policy, ``--debug``, JSON output and common options.

Kept apart from :mod:`edgekd.cli` so the command module reads as the list of commands, and the one place that
turns an exception into one line and an exit code (CONVENTIONS.md) is small enough to audit.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgekd.errors import EdgekdError

log = logging.getLogger("edgekd")

SET_HELP = "Override a recipe value: section.key=value (repeatable; values parsed as YAML; rightmost wins)."


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


def emit(data: Any, as_json: bool, human: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        human()


def load(recipe_path: Path, overrides: tuple[str, ...], trust_checkpoint: bool = False):  # noqa: ANN202
    """Load the recipe; ``--trust-checkpoint`` is the rightmost override of ``teacher.trust_checkpoint``."""
    from edgekd.recipe import load_recipe

    extra = ("teacher.trust_checkpoint=true",) if trust_checkpoint else ()
    return load_recipe(recipe_path, (*overrides, *extra))


def existing_file(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Path validation that exits with code 2 and one line, like every other bad input."""
    if value is not None and not Path(value).is_file():
        raise click.BadParameter(f"{value}: file not found")
    return value


TRUST_OPT = click.option(
    "--trust-checkpoint",
    is_flag=True,
    help="Allow full unpickling of teacher.checkpoint, which can run code from the file (trusted files only). "
    "Same as --set teacher.trust_checkpoint=true.",
)


RECIPE_ARG = click.argument("recipe", type=click.Path(path_type=Path))
OUT_OPT = click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Run directory (created if missing).",
)
SET_OPT = click.option("--set", "overrides", multiple=True, help=SET_HELP)
JSON_OPT = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
