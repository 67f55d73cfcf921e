"""What a profiling target is: a transport that runs ``probe.py`` somewhere and hands back its JSON.

Why this split: the measurement protocol lives entirely in the standalone probe, so a target only has to get
the probe and the model onto a device, run ``python probe.py ARGS``, and return stdout. ``local`` does that
with a subprocess; an ``ssh`` target (Raspberry Pi, Jetson) will copy two files and run the same command. The
bare-interpreter baseline for ``peak_rss_mb`` is measured once per target instance and cached, because it
depends on the device's Python, numpy and onnxruntime, not on the model.
"""

from __future__ import annotations

import contextlib
import json
import signal
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.errors import EdgekdError
from edgekd.recipe.schema import ProfileConfig

PROBE_PATH = Path(__file__).with_name("probe.py")


@dataclass(frozen=True)
class ProbeSettings:
    """One probe configuration; :meth:`argv` is the probe's command line for it.

    ``runs`` set means exactly that many timed runs; otherwise the probe adapts within ``time_budget_s``
    (bounded by ``min_runs``/``max_runs``, and measuring at least ``min_time_s``; ``None`` = the probe's
    default, half the budget) until the median's 95% CI is within ``±ci_target``.
    """

    threads: int = 1
    batch: int = 1
    warmup: int = 5
    runs: int | None = None
    time_budget_s: float = 3.0
    min_runs: int = 10
    min_time_s: float | None = None
    max_runs: int = 10000
    ci_target: float = 0.02
    timeout_s: float = 600.0
    dims: tuple[tuple[str, int], ...] = ()
    op_profile: bool = False
    tensorrt: bool = False

    @classmethod
    def from_config(cls, cfg: ProfileConfig, threads: int) -> ProbeSettings:
        """Settings for one thread count of a recipe's ``profile`` section."""
        return cls(
            threads=threads,
            batch=cfg.batch,
            warmup=cfg.warmup,
            runs=cfg.runs,
            time_budget_s=cfg.time_budget_s,
            min_runs=cfg.min_runs,
            min_time_s=cfg.min_time_s,
            max_runs=cfg.max_runs,
            ci_target=cfg.ci_target,
            timeout_s=cfg.timeout_s,
            op_profile=cfg.op_profile,
            tensorrt=cfg.tensorrt,
        )

    def argv(self) -> list[str]:
        """Probe arguments after the model path."""
        args = ["--threads", str(self.threads), "--batch", str(self.batch), "--warmup", str(self.warmup)]
        if self.runs is not None:
            args += ["--runs", str(self.runs)]
        else:
            args += ["--time-budget", repr(self.time_budget_s), "--min-runs", str(self.min_runs)]
            args += ["--max-runs", str(self.max_runs), "--ci-target", repr(self.ci_target)]
            if self.min_time_s is not None:
                args += ["--min-time", repr(self.min_time_s)]
        for name, size in self.dims:
            args += ["--dim", f"{name}={size}"]
        if self.op_profile:
            args.append("--op-profile")
        if self.tensorrt:
            args.append("--tensorrt")
        return args


def parse_probe_output(stdout: str, stderr: str, returncode: int, where: str) -> dict[str, Any]:
    """The probe's JSON answer; a probe error or an unparsable answer raises EdgekdError with its message.

    Shared by every target so all report failures the same way. The last non-empty stdout line is read, in
    case a device prints a banner (e.g. an SSH login message) before the probe.
    """
    lines = [line for line in stdout.splitlines() if line.strip()]
    try:
        answer = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        answer = None
    status = f"exit code {returncode}"
    if returncode < 0:  # subprocess reports death by signal as -signum (an OOM kill is SIGKILL)
        with contextlib.suppress(ValueError):
            status = f"killed by {signal.Signals(-returncode).name}"
    if not isinstance(answer, dict):
        detail = (stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise EdgekdError(f"profiling probe on {where} failed ({status}): {detail}")
    if "error" in answer or returncode != 0:
        raise EdgekdError(f"profiling probe on {where} failed: {answer.get('error', status)}")
    return answer


class Target(ABC):
    """A device that can run the probe. Subclasses implement only :meth:`run_probe` (the transport)."""

    name = "target"

    def __init__(self) -> None:
        self._baseline: dict[str, Any] | None = None

    @abstractmethod
    def run_probe(self, model_path: Path | None, settings: ProbeSettings) -> dict[str, Any]:
        """Run ``probe.py`` for ``model_path`` (``None``: ``--baseline``) and return its parsed JSON.

        Raises:
            EdgekdError: the probe failed, timed out or answered something that is not its JSON.
        """

    def baseline(self) -> dict[str, Any]:
        """The probe's ``--baseline`` answer (bare interpreter's peak RSS), measured once and cached."""
        if self._baseline is None:
            self._baseline = self.run_probe(None, ProbeSettings(timeout_s=120.0))
        return self._baseline
