"""The ``local`` target: this machine, one fresh ``sys.executable`` subprocess per measurement."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from edgekd.errors import EdgekdError
from edgekd.profile import TARGETS
from edgekd.profile.checks import PREFLIGHT_SCRIPT, Check, read_preflight
from edgekd.profile.target import PROBE_PATH, ProbeSettings, Target, parse_probe_output

HERE = "this machine"


@TARGETS.register("local")
class LocalTarget(Target):
    """Profile on the machine running edgekd, with the same Python, numpy and onnxruntime.

    Each configuration runs in a new process so ``ru_maxrss`` (a per-process peak) belongs to that model alone
    and no session, allocator arena or thread pool survives from a previous measurement. Defaults: threads
    ``[1, 0]`` (0 = all cores), batch 1, 5 warmup runs, adaptive runs within 3 s per configuration.

    Recipe::

        profile:
          targets: [local]
          threads: [1, 0]
    """

    name = "local"

    @property
    def address(self) -> str:
        return HERE

    def check(self) -> list[Check]:
        """The device checks of an ssh target, run with this Python (what the local probe runs with)."""
        try:
            done = subprocess.run(
                [sys.executable, "-c", PREFLIGHT_SCRIPT],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise EdgekdError(
                f"checking local: {sys.executable} did not finish importing numpy and onnxruntime within 120 s; "
                f"run {sys.executable} -c 'import onnxruntime' to see why"
            ) from None
        return read_preflight(done, sys.executable, HERE)[0]

    def run_probe(self, model_path: Path | None, settings: ProbeSettings) -> dict[str, Any]:
        cmd = [sys.executable, str(PROBE_PATH)]
        cmd += ["--baseline"] if model_path is None else [str(model_path), *settings.argv()]
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=settings.timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            what = "the baseline" if model_path is None else Path(model_path).name
            raise EdgekdError(
                f"profiling probe on local timed out after {settings.timeout_s:g} s measuring {what}; "
                "raise profile.timeout_s or lower profile.runs / profile.time_budget_s"
            ) from None
        return parse_probe_output(done.stdout, done.stderr, done.returncode, where=self.name)
