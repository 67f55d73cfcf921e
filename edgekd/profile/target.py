"""What a profiling target is: a transport that runs ``probe.py`` somewhere and hands back its JSON.

Why this split: the measurement protocol lives entirely in the standalone probe, so a target only has to get
the probe and the model onto a device, run ``python probe.py ARGS``, and return stdout. ``local`` does that
with a subprocess; an ``ssh`` target (Raspberry Pi, Jetson) copies two files and runs the same command. The
bare-interpreter baseline for ``peak_rss_mb`` is measured once per target instance and cached, because it
depends on the device's Python, numpy and onnxruntime, not on the model.

Two shapes of target share the :class:`Target` contract:

* a *plain* target is one fixed place, built with no arguments and named by its registered name (``local``);
* a *target kind* (:class:`DeviceTarget`, e.g. ``ssh``) is a family of devices, each described by a spec: a
  ``targets.yaml`` entry with ``kind: <name>`` or a ``<scheme>://...`` URL. A kind declares its ``scheme``,
  its ``Spec`` (a :class:`TargetSpec` subclass) and :meth:`~DeviceTarget.parse_url`;
  :mod:`edgekd.profile.resolve` dispatches names to kinds through the ``TARGETS`` registry, so adding a kind
  (``adb``, a serial console) is one module plus one import line in :mod:`edgekd.profile`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edgekd.errors import EdgekdError, InputError
from edgekd.profile.checks import Check
from edgekd.recipe.schema import ProfileConfig
from edgekd.recipe.validation import validate_params

PROBE_PATH = Path(__file__).with_name("probe.py")
PROBE_INPUT_EXIT = 2  # the probe's exit code for a request it cannot meet as asked (bad input)


@dataclass(frozen=True)
class ProbeSettings:
    """One probe configuration; :meth:`argv` is the probe's command line for it.

    ``runs`` set means exactly that many timed runs; otherwise the probe adapts within ``time_budget_s``
    (bounded by ``min_runs``/``max_runs``, and measuring at least ``min_time_s``; ``None`` = the probe's
    default, half the budget) until the median's 95% CI is within ``±ci_target``. ``dims`` (named dynamic
    dimensions) and ``shapes`` (whole input shapes) size the inputs where the model leaves them dynamic;
    ``provider`` is the ONNX Runtime execution provider (``None``: CPU).
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
    shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    provider: str | None = None
    op_profile: bool = False
    tensorrt: bool = False
    bundle: bool = False  # the model is a tar of .onnx files, each timed (edgekd.latency calibration)
    rounds: int = 1  # bundle: passes over its models; each keeps its lowest p50

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
            dims=tuple(cfg.dims.items()),
            shapes=tuple((name, tuple(shape)) for name, shape in cfg.shapes.items()),
            provider=cfg.provider,
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
        for name, shape in self.shapes:
            args += ["--shape", f"{name}={'x'.join(str(d) for d in shape)}"]
        if self.provider is not None:
            args += ["--provider", self.provider]
        if self.op_profile:
            args.append("--op-profile")
        if self.tensorrt:
            args.append("--tensorrt")
        if self.bundle:
            args += ["--bundle", "--rounds", str(self.rounds)]
        return args


def parse_dim(text: str) -> tuple[str, int]:
    """``--dim height=224`` → ``("height", 224)``: the inverse of :meth:`ProbeSettings.argv`'s encoding.

    Raises:
        InputError: not ``NAME=SIZE`` with a positive integer size (one line naming the flag).
    """
    name, sep, size = text.rpartition("=")
    if not sep or not name or not size.isdigit() or int(size) < 1:
        raise InputError(f"--dim {text!r}: expected NAME=SIZE with a size >= 1, e.g. --dim height=224")
    return name, int(size)


def parse_shape(text: str) -> tuple[str, list[int]]:
    """``--shape input=1x3x224x224`` → ``("input", [1, 3, 224, 224])``.

    Raises:
        InputError: not ``INPUT=SHAPE`` with sizes >= 1 joined by ``x`` (one line naming the flag).
    """
    name, sep, dims = text.rpartition("=")
    sizes = dims.lower().split("x")
    if not sep or not name or not all(d.isdigit() and int(d) >= 1 for d in sizes):
        raise InputError(
            f"--shape {text!r}: expected INPUT=SHAPE with sizes >= 1 joined by x, e.g. --shape input=1x3x224x224"
        )
    return name, [int(d) for d in sizes]


def parse_probe_output(stdout: str, stderr: str, returncode: int, where: str) -> dict[str, Any]:
    """The probe's JSON answer; a probe error or an unparsable answer raises EdgekdError with its message.

    Shared by every target so all report failures the same way. The last non-empty stdout line is read, in
    case a device prints a banner (e.g. an SSH login message) before the probe. A JSON error with exit code 2
    is a request the model or device cannot meet as asked (a provider it lacks, a dynamic input dimension with
    no size): InputError, so the CLI exits 2 like for any bad input.
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
    if "error" in answer and returncode == PROBE_INPUT_EXIT:
        raise InputError(f"profiling on {where}: {answer['error']}")
    if "error" in answer or returncode != 0:
        raise EdgekdError(f"profiling probe on {where} failed: {answer.get('error', status)}")
    return answer


class Target(ABC):
    """A device that can run the probe. Subclasses implement only :meth:`run_probe` (the transport)."""

    name = "target"

    def __init__(self) -> None:
        self._baseline: dict[str, Any] | None = None

    @property
    def threads(self) -> list[int] | None:
        """Thread counts this device profiles instead of ``profile.threads``; ``None``: the recipe's.

        Part of the contract (not a per-kind attribute) so the stage asks every target the same way; a 4-core
        Pi and a 12-core Jetson in one recipe want different sweeps. :class:`DeviceTarget` answers from its
        spec (``threads:`` in ``targets.yaml``, ``?threads=1,4`` in a URL).
        """
        return None

    @abstractmethod
    def run_probe(self, model_path: Path | None, settings: ProbeSettings) -> dict[str, Any]:
        """Run ``probe.py`` for ``model_path`` (``None``: ``--baseline``) and return its parsed JSON.

        Raises:
            EdgekdError: the probe failed, timed out or answered something that is not its JSON.
        """

    @property
    def address(self) -> str:
        """Where the device is, for listings and messages (``this machine``; ssh: ``user@host:port``)."""
        return self.name

    @abstractmethod
    def check(self) -> list[Check]:
        """Verify step by step that the probe can run here (``edgekd targets --check``).

        A device problem is a failed :class:`~edgekd.profile.checks.Check` in the answer, never an exception;
        steps after a failed one are ``skip``.
        """

    def baseline(self) -> dict[str, Any]:
        """The probe's ``--baseline`` answer (bare interpreter's peak RSS), measured once and cached."""
        if self._baseline is None:
            self._baseline = self.run_probe(None, ProbeSettings(timeout_s=120.0))
        return self._baseline


class TargetSpec(BaseModel):
    """The fields every target kind's spec has: the base class of each kind's ``Spec``.

    Why a shared base: ``threads`` then means the same in every kind's ``targets.yaml`` entry and URL, and
    :attr:`Target.threads` reads it without knowing the kind. ``path_fields`` names the fields holding local
    file paths (keys, configs): ``~`` is expanded and relative paths resolve against the ``targets.yaml``
    directory (for a URL: the working directory).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    path_fields: ClassVar[tuple[str, ...]] = ()

    threads: list[int] | None = Field(
        None, min_length=1, description="Thread counts for this device; default: profile.threads."
    )
    notes: str | None = Field(None, description="Free text recorded with every profile (board, cooling).")

    def describe(self) -> str:
        """Where the device is, for listings and messages (ssh: ``user@host:port``); every kind says."""
        raise NotImplementedError(f"{type(self).__name__} must define describe()")

    @field_validator("threads")
    @classmethod
    def _threads(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(t < 0 for t in value):
            raise ValueError("thread counts must be >= 0 (0 means all cores)")
        return value


class DeviceTarget(Target):
    """A target *kind*: a family of devices, each described by a :class:`TargetSpec` (address, Python, threads).

    A kind is registered under its kind name (``@TARGETS.register("ssh")``) and declares:

    * ``scheme``: the URL scheme it answers (``"ssh"`` for ``ssh://...``);
    * ``Spec``: its pydantic spec, a :class:`TargetSpec` subclass; a ``targets.yaml`` entry with
      ``kind: <name>`` is validated against it;
    * ``url_form``: the URL's shape for help messages (``"ssh://user@host[:port]"``);
    * :meth:`parse_url` (URL → Spec; :meth:`spec_from_url` does the query part) and :meth:`run_probe`.

    It is built from ``(spec, name)``; construction must not connect (the first measurement does). Its
    docstring shows a recipe using a ``<scheme>://`` URL and a ``targets.yaml`` entry with ``kind: <name>``.
    """

    scheme: ClassVar[str]
    Spec: ClassVar[type[TargetSpec]]
    url_form: ClassVar[str]

    def __init__(self, spec: TargetSpec, name: str) -> None:
        super().__init__()
        self.spec = spec
        self.name = name

    @property
    def threads(self) -> list[int] | None:
        return self.spec.threads

    @property
    def address(self) -> str:
        return self.spec.describe()

    @classmethod
    def from_url(cls, url: str) -> DeviceTarget:
        """A new, unconnected target for ``url``, named by the URL as written."""
        return cls(cls.parse_url(url), url)

    @classmethod
    @abstractmethod
    def parse_url(cls, url: str) -> TargetSpec:
        """``<scheme>://...`` → ``cls.Spec``.

        Raises:
            InputError: a malformed URL or an invalid field (one line, naming the URL).
        """

    @classmethod
    def spec_from_url(cls, url: str, fields: dict[str, Any], url_keys: tuple[str, ...] = ()) -> TargetSpec:
        """``fields`` (what the URL's own parts say) plus its ``?key=value`` query, validated as ``cls.Spec``.

        Shared so that a query means the same for every kind: any Spec field may be given, ``threads`` as
        comma-separated integers, path fields relative to the working directory. ``url_keys`` are fields the
        URL's parts carry (host, user, port): refused as query keys, so a URL says each thing once.
        """
        fields = dict(fields)
        for key, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
            if key in fields or key in url_keys:
                raise InputError(f"target {url}: give {key} in the URL itself, not as ?{key}=")
            fields[key] = _url_threads(url, value) if key == "threads" else value
        for key in cls.Spec.path_fields:
            if isinstance(fields.get(key), str):
                fields[key] = expand_path(fields[key], Path.cwd())
        return validate_params(cls.Spec, fields, f"target {url}: {cls.scheme}")


def _url_threads(url: str, value: str) -> list[int]:
    try:
        return [int(t) for t in value.split(",") if t.strip()]
    except ValueError:
        raise InputError(f"target {url}: threads must be comma-separated integers, e.g. 1,4") from None


def expand_path(value: str | None, base: Path) -> str | None:
    """``~`` expanded, relative paths resolved against ``base`` (the targets.yaml directory)."""
    if value is None:
        return None
    path = Path(os.path.expanduser(value))
    return str(path if path.is_absolute() else (base / path).resolve())
