"""Options and helpers the ``edgekd`` commands share: recipe loading with ``--set``/``--trust-checkpoint``,
``--json`` output, path checks and the common click options."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

SET_HELP = "Override a recipe value: section.key=value (repeatable; values parsed as YAML; rightmost wins)."


def emit(data: Any, as_json: bool, human: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        human()


def load(recipe_path: Path, overrides: tuple[str, ...], trust_checkpoint: bool = False):  # noqa: ANN202
    """Load the recipe; ``--trust-checkpoint`` is the rightmost override of ``teacher.trust_checkpoint``."""
    from edgekd.run import load_recipe

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
