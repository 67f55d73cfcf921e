"""The report stage: report.json (the machine contract) and the human reports rendered from it.

``build_report`` assembles report.json from stage results (``describe_input`` reads how to call the shipped
file), ``validate_report`` checks the docs/run-directory.md contract, ``write_reports`` writes JSON/Markdown/HTML/plots
atomically, and ``render`` regenerates the human reports from an existing run directory (``edgekd report
RUN_DIR``).

>>> from edgekd.report import ReportInputs, build_report, validate_report, write_reports
>>> report = build_report(ReportInputs(recipe=..., task="classification", ...))  # doctest: +SKIP
>>> validate_report(report); write_reports(run_dir, report, ["json", "md", "html"])  # doctest: +SKIP
"""

from __future__ import annotations

from edgekd.report.build import ReportInputs, build_report, speedup_table
from edgekd.report.deploy import InputSpec, describe_input
from edgekd.report.environment import environment
from edgekd.report.render import render, write_reports
from edgekd.report.schema import SCHEMA_VERSION, report_json_schema, validate_report
from edgekd.report.stage import STAGE, run

__all__ = [
    "SCHEMA_VERSION",
    "STAGE",
    "InputSpec",
    "ReportInputs",
    "ReportInputs",
    "build_report",
    "describe_input",
    "environment",
    "render",
    "run",
    "report_json_schema",
    "speedup_table",
    "validate_report",
    "write_reports",
]
