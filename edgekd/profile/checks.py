"""What a device needs to run the probe, checked one step at a time: Python >= 3.8, numpy, onnxruntime.

Why one module for the script and its reading: the preflight before a device's first measurement and
``edgekd targets --check`` run the same script and read its answer the same way, so what the check reports as
ok is exactly what a measurement needs. A transport (``ssh``) runs :func:`preflight_command` on the device
and hands the finished process to :func:`read_preflight`; its own connection step (reachable, host key,
authentication) is the transport's line, before these.

The script prints one JSON line per step and flushes each, so an import that kills the interpreter (an
onnxruntime wheel built for a newer CPU dies of SIGILL) still leaves the lines before it, and the step that
never answered is the one named. It is kept valid Python 2.7 so that an old interpreter is reported by its
version rather than by a SyntaxError. Importing the modules (not just finding them) catches broken installs
and gives the onnxruntime version and execution providers.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import signal
import subprocess
from dataclasses import dataclass
from typing import Any

MIN_PYTHON = (3, 8)
MODULES = ("numpy", "onnxruntime")
INSTALL_HINT = "pip install onnxruntime numpy"
NO_PYTHON_EXIT = 97  # what preflight_command exits with when the configured Python is not on the device
PREFLIGHT_SCRIPT = """\
import json, sys
def say(**fields):
    print(json.dumps(fields))
    sys.stdout.flush()
say(step='python', version='.'.join(map(str, sys.version_info[:3])), executable=sys.executable)
for name in ('numpy', 'onnxruntime'):
    try:
        module = __import__(name)
        found = {'version': str(getattr(module, '__version__', 'unknown'))}
        if name == 'onnxruntime':
            found['providers'] = list(module.get_available_providers())
    except Exception as exc:
        text = (str(exc).strip().splitlines() or [''])[0][:200]
        absent = isinstance(exc, ImportError) and getattr(exc, 'name', None) == name
        found = {'error': type(exc).__name__ + (': ' + text if text else ''), 'missing': absent}
    say(step=name, **found)
"""


@dataclass(frozen=True)
class Check:
    """One line of a device check: what was checked, ``ok``/``fail``/``skip``, and the version or the reason.

    ``detail`` of a failure says what to do, as every edgekd error does; a skipped step names the step it
    waited for.
    """

    name: str
    status: str
    detail: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def skipped(after: str, names: tuple[str, ...] = ("python", *MODULES)) -> list[Check]:
    """``names`` as skipped because step ``after`` failed (a later step cannot run without it)."""
    return [Check(name, "skip", f"not checked: {after} failed") for name in names]


def preflight_command(python_word: str) -> str:
    """The POSIX shell snippet that runs the script with ``python_word`` (already quoted for the shell).

    It exits with :data:`NO_PYTHON_EXIT` when the command is not found, so "no such Python" is told apart
    from a Python that ran and failed.
    """
    return (
        f"command -v {python_word} >/dev/null 2>&1 || exit {NO_PYTHON_EXIT}\n"
        f"{python_word} -c {shlex.quote(PREFLIGHT_SCRIPT)}"
    )


def read_preflight(
    done: subprocess.CompletedProcess[str], python: str, where: str
) -> tuple[list[Check], dict[str, dict[str, Any]]]:
    """The script's answer as one Check per step (python, numpy, onnxruntime) and the raw steps by name.

    Args:
        done: the finished :func:`preflight_command` (stdout may start with a login banner: lines that are
            not the script's JSON are skipped).
        python: the configured Python, as the user wrote it (for messages).
        where: the device, as messages name it (``pi@pi5.local:22``).
    """
    if done.returncode == NO_PYTHON_EXIT:
        return [
            Check(
                "python",
                "fail",
                f"no Python '{python}' on {where}; install Python >= 3.8 there (then {INSTALL_HINT}) or set "
                "the target's python (targets.yaml python:, or ?python=PATH in the ssh:// URL)",
            ),
            *skipped("python", MODULES),
        ], {}
    steps = _steps(done.stdout)
    info = steps.get("python")
    if info is None or _version(info.get("version")) < MIN_PYTHON:
        found = info["version"] if info else _ended(done)
        fail = Check(
            "python",
            "fail",
            f"'{python}' on {where} is not a usable Python >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]} ({found}); set "
            "the target's python to a newer one",
        )
        return [fail, *skipped("python", MODULES)], steps
    executable = str(info.get("executable") or python)
    checks = [Check("python", "ok", f"{info['version']} ({executable})")]
    checks += [_module_check(name, steps.get(name), executable, done) for name in MODULES]
    return checks, steps


def preflight_error(checks: list[Check], steps: dict[str, dict[str, Any]], where: str) -> str | None:
    """The one-line reason a measurement cannot start (``None`` when every check passed).

    Missing modules are named together with one install command, since a bare device lacks both.
    """
    failed = [c for c in checks if c.status == "fail"]
    if not failed:
        return None
    missing = [name for name in MODULES if steps.get(name, {}).get("missing")]
    if failed[0].name in MODULES and missing:
        executable = steps["python"].get("executable") or "python3"
        return (
            f"{executable} on {where} has no {' and no '.join(missing)}; install them on the device: "
            f"{executable} -m {INSTALL_HINT} (or point the target's python at a venv that has them)"
        )
    return failed[0].detail


def _module_check(
    name: str, step: dict[str, Any] | None, executable: str, done: subprocess.CompletedProcess[str]
) -> Check:
    if step is None:  # the interpreter died (or hung up) before answering for this module
        return Check(
            name,
            "fail",
            f"importing {name} with {executable} did not finish ({_ended(done)}); run {executable} -c "
            f"'import {name}' on the device to see why (a wheel built for another CPU dies of SIGILL)",
        )
    if "error" not in step:
        providers = step.get("providers")
        return Check(name, "ok", str(step["version"]) + (f" ({', '.join(providers)})" if providers else ""))
    if step.get("missing"):
        return Check(
            name, "fail", f"not installed for {executable}; install it: {executable} -m pip install {name}"
        )
    return Check(
        name,
        "fail",
        f"importing {name} failed ({step['error']}); reinstall it: {executable} -m pip install "
        f"--force-reinstall {name}",
    )


def _steps(stdout: str) -> dict[str, dict[str, Any]]:
    steps: dict[str, dict[str, Any]] = {}
    for line in stdout.splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            value = json.loads(line)
            if isinstance(value, dict) and isinstance(value.get("step"), str):
                steps[value.pop("step")] = value
    return steps


def _version(text: object) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in str(text).split(".")[:2])
    except ValueError:
        return (0, 0)


def _ended(done: subprocess.CompletedProcess[str]) -> str:
    """How the script ended, for messages: a remote shell reports death by signal N as exit 128+N."""
    code = done.returncode
    status = f"exit code {code}"
    if 128 < code < 160 or code < 0:
        with contextlib.suppress(ValueError):
            status = f"killed by {signal.Signals(abs(code) - 128 if code > 0 else -code).name}"
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    return f"{status}: {lines[-1][:300]}" if lines else status
