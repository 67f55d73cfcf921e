"""Write report.json, report.md, report.html and plots/*.png into a run directory.

report.json is the source of truth; the markdown, the HTML and the plots are pure functions of it, which is
why :func:`render` can regenerate them later (``edgekd report RUN_DIR``) after a template or plotting fix
without rerunning anything. The HTML embeds its plots as base64 PNGs so it stays one self-contained file
that can be attached to a ticket or a model card. Every file is written atomically (``edgekd.io``).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2

from edgekd.errors import InputError
from edgekd.io import read_json, write_json, write_text
from edgekd.report.plots import draw_plots
from edgekd.report.schema import validate_report
from edgekd.report.view import build_view
from edgekd.rundir import RunDir

FORMATS = ("json", "md", "html")


def write_reports(run_dir: Path, report: dict, formats: Sequence[str]) -> list[Path]:
    """Validate ``report`` and write the requested formats into ``run_dir``; return the paths written.

    Args:
        run_dir: The run directory (created if missing).
        report: A report.json dict from :func:`edgekd.report.build_report`.
        formats: Any of ``json``, ``md``, ``html``. Plots are drawn when ``md`` or ``html`` is requested.

    Raises:
        InputError: an unknown format, or a report that breaks the report.json contract.

    >>> write_reports(Path("runs/r1"), report, ["json", "md", "html"])  # doctest: +SKIP
    [PosixPath('runs/r1/report.json'), PosixPath('runs/r1/plots/latency.png'), ...]
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise InputError(f"unknown report format '{unknown[0]}'; choose from {', '.join(FORMATS)}")
    validate_report(report)
    run = RunDir(Path(run_dir))
    run.root.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if "json" in formats:
        written.append(write_json(run.report_json, report))
    if "md" not in formats and "html" not in formats:
        return written
    plots = draw_plots(report, run.plots)
    written.extend(path for _, path in plots)
    context = build_view(report)
    if "md" in formats:
        md_plots = {p.stem: {"title": t, "src": p.relative_to(run.root).as_posix()} for t, p in plots}
        markdown = _collapse_blank_lines(_render("report.md.j2", context, md_plots))
        written.append(write_text(run.report_md, markdown))
    if "html" in formats:
        html_plots = {p.stem: {"title": t, "src": _data_uri(p)} for t, p in plots}
        written.append(write_text(run.report_html, _render("report.html.j2", context, html_plots)))
    return written


def render(run_dir: Path, formats: Sequence[str] = ("md", "html")) -> list[Path]:
    """Regenerate report.md, report.html and plots from ``run_dir/report.json`` (which is left untouched).

    Raises:
        InputError: the run directory or its report.json is missing, not JSON, or breaks the contract.
    """
    run = RunDir(Path(run_dir))
    if not run.root.is_dir():
        raise InputError(f"{run.root}: run directory not found; pass the --out directory of an edgekd run")
    if not run.report_json.is_file():
        raise InputError(
            f"{run.report_json}: not found; `edgekd report` redraws the reports of a finished run: run "
            f"`edgekd compress RECIPE --out {run.root}` first"
        )
    report = read_json(run.report_json)
    return write_reports(run.root, report, [f for f in formats if f != "json"])


def _collapse_blank_lines(markdown: str) -> str:
    """At most one blank line in a row (the templates' optional sections leave runs), except in code blocks:
    the deploy snippet keeps its two blank lines around a function, as a formatter would write them."""
    parts = markdown.split("```")
    for i in range(0, len(parts), 2):  # even parts are outside ``` fences
        parts[i] = re.sub(r"\n{3,}", "\n\n", parts[i])
    return "```".join(parts)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _environment(autoescape: bool) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("edgekd.report", "templates"),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,  # a typo in a template fails loudly instead of rendering blank
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _render(template: str, context: dict[str, Any], plots: dict[str, dict[str, str]]) -> str:
    """``plots`` maps a plot's file stem (``latency``) to its title and ``src`` (a path or a data URI)."""
    env = _environment(autoescape=template.endswith(".html.j2"))
    env.filters["md_cell"] = _md_cell
    return env.get_template(template).render(**context, plots=plots)


def _md_cell(text: object) -> str:
    """Markdown table cells cannot contain a raw ``|`` or newline."""
    return str(text).replace("|", "\\|").replace("\n", " ")
