"""The report stage: report.json (the machine contract) and the human reports rendered from it.

``build_report`` assembles report.json from stage results, ``validate_report`` checks the CONVENTIONS.md
contract, ``write_reports`` writes JSON/Markdown/HTML/plots atomically, and ``render`` regenerates the human
reports from an existing run directory (``edgekd report RUN_DIR``).

>>> from edgekd.report import ReportInputs, build_report, validate_report, write_reports
>>> report = build_report(ReportInputs(recipe=..., task="classification", ...))  # doctest: +SKIP
>>> validate_report(report); write_reports(run_dir, report, ["json", "md", "html"])  # doctest: +SKIP
"""

from __future__ import annotations

from edgekd.report.build import ReportInputs, build_report, speedup_table
from edgekd.report.environment import environment
from edgekd.report.render import render, write_reports
from edgekd.report.schema import SCHEMA_VERSION, report_json_schema, validate_report
from edgekd.report.stage import STAGE, run

__all__ = [
    "SCHEMA_VERSION",
    "STAGE",
    "ReportInputs",
    "ReportInputs",
    "build_report",
    "environment",
    "render",
    "run",
    "report_json_schema",
    "speedup_table",
    "validate_report",
    "write_reports",
]
