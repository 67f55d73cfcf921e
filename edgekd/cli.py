"""The ``edgekd`` command line: it parses arguments, calls one stage, prints the result.

Exit codes (CONVENTIONS.md): 0 success · 1 runtime failure · 2 bad input · 3 a deploy gate failed.
Errors are one line on stderr; ``--debug`` (or ``EDGEKD_DEBUG=1``) shows the traceback.
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

from edgekd import __version__
from edgekd.errors import EdgekdError, InputError

log = logging.getLogger("edgekd")

SET_HELP = "Override a recipe value: section.key=value (repeatable; values parsed as YAML; rightmost wins)."


def _setup_console_logging(debug: bool) -> None:
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
        _setup_console_logging(debug)
        try:
            return fn(*args, **kwargs)
        except EdgekdError as exc:
            if debug:
                traceback.print_exc()
            click.echo(f"edgekd: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("edgekd: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # an unexpected failure is a bug: keep it one line unless --debug
            if debug:
                traceback.print_exc()
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            click.echo(
                f"edgekd: internal error: {type(exc).__name__}: {first[:300]} (rerun with --debug for the traceback)",
                err=True,
            )
            sys.exit(1)

    return wrapper


def emit(data: Any, as_json: bool, human: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        human()


def _load(recipe_path: Path, overrides: tuple[str, ...]):  # noqa: ANN202
    from edgekd.recipe import load_recipe

    return load_recipe(recipe_path, overrides)


def _existing_file(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Path validation that exits with code 2 and one line, like every other bad input."""
    if value is not None and not Path(value).is_file():
        raise click.BadParameter(f"{value}: file not found")
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="edgekd")
def cli() -> None:
    """Compress a trained PyTorch model for an edge device from one YAML recipe.

    \b
    Quick start:
      edgekd compress recipes/quickstart.yaml --out runs/quickstart
    Each pipeline stage is also a command: train, prune, distill, export, profile, report.
    """


@cli.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Where teacher.pt goes.")
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
@click.option("--resume", is_flag=True, help="Continue from out/state/train-last.pt.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@command
def train(recipe: Path, out_dir: Path, overrides: tuple[str, ...], resume: bool, as_json: bool) -> None:
    """Train the recipe's teacher (section `train`) and write OUT/teacher.pt + teacher.json."""
    from edgekd.engine.teacher import train_teacher
    from edgekd.results import to_dict

    run = train_teacher(_load(recipe, overrides), out_dir, resume=resume)
    emit(
        {"checkpoint": str(run.checkpoint), "sha256": run.sha256, "metrics": run.result.metrics,
         "macs": run.macs, "params": run.params, "history": to_dict(run.result.history)},
        as_json,
        lambda: click.echo(f"teacher: {run.checkpoint} metrics {run.result.metrics} sha256 {run.sha256}"),
    )


@cli.command()
@click.option("--json", "as_json", is_flag=True, default=True, hidden=True)
@command
def schema(as_json: bool) -> None:
    """Print the recipe JSON Schema (for editor completion and validation)."""
    from edgekd.recipe.schema import Recipe

    click.echo(json.dumps(Recipe.model_json_schema(), indent=2))


def main() -> None:
    cli(prog_name="edgekd")


__all__ = ["cli", "main", "InputError"]
