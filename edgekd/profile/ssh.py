"""The ``ssh`` target: run the standalone probe on a remote device (Raspberry Pi, Jetson, any Linux box).

Why the system OpenSSH client and not a Python SSH library: the user's ``~/.ssh/config`` (host aliases,
ProxyJump, ControlPath), ssh-agent, hardware keys and known_hosts then work exactly as in their shell, and
edgekd holds no credentials of its own. Every invocation adds only:

* ``BatchMode=yes``: never prompt (a password or passphrase prompt would hang a CI job);
* ``ConnectTimeout`` and ``ServerAlive*``: an unreachable or vanished device fails in seconds, not minutes;
* ``ControlMaster=no``: an existing multiplexed connection is reused, but no persistent master is started
  (its background process would hold our output pipes open until ``ControlPersist`` expires);
* host-key checking is left as configured (OpenSSH's default refuses unknown and changed keys).

One measurement is three connections and a copy: ``mktemp -d`` on the device, ``probe.py`` (and the model)
streamed into that fresh directory, then ``sh -c`` running the probe under the device's ``timeout`` with a trap
that removes the directory on any exit. If the run never started, the directory is removed from here. Every
value that reaches the remote shell (paths, python, probe arguments) passes through :func:`shlex.quote`; host
and user are validated so they cannot be read as ssh options. Before the first measurement one more connection
runs :mod:`edgekd.profile.checks` (Python >= 3.8, numpy and onnxruntime importable), so a bare device gets an
install hint instead of a traceback; ``edgekd targets --check`` runs the same connection and script.

Why files travel through the ssh channel and not with ``scp``: since OpenSSH 9.0, ``scp`` speaks SFTP, and a
device whose sshd has no ``sftp`` subsystem (minimal images, Dropbear, hardened configs) answers
"scp: Connection closed", which looks like an unreachable device although ssh works. Each file is instead
piped into ``ssh ... python -c RECEIVER PATH``: the device's Python (already required) writes it and answers
its size and SHA-256, which must match the local file's. That needs nothing on the device beyond what the
probe needs, and a copy that arrives short or changed is an error naming the file and the transfer.

Recipe::

    profile:
      targets: [local, "ssh://pi@raspberrypi.local", pi5]   # pi5: a named target in targets.yaml
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shlex
import subprocess
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import unquote, urlsplit

from pydantic import Field, field_validator

from edgekd.errors import EdgekdError, InputError
from edgekd.profile import TARGETS
from edgekd.profile.checks import (
    INSTALL_HINT,
    Check,
    preflight_command,
    preflight_error,
    read_preflight,
    skipped,
)
from edgekd.profile.target import (
    PROBE_PATH,
    DeviceTarget,
    ProbeSettings,
    TargetSpec,
    parse_probe_output,
)

log = logging.getLogger("edgekd")

COPY_TIMEOUT_S = 300.0  # one file through the ssh channel; a 100 MB model over a slow Wi-Fi link fits
CONTROL_TIMEOUT_S = 60.0  # mktemp, preflight, cleanup: tiny commands, so only the connection can be slow
TRANSFER = "an ssh stream to the device's Python"  # how files travel, as error messages name it
_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
_REMOTE_DIR = re.compile(r"/[A-Za-z0-9._/-]*/edgekd\.[A-Za-z0-9]{6,}")
_RECEIVE = """\
import hashlib, json, sys
digest, size = hashlib.sha256(), 0
with open(sys.argv[1], 'wb') as out:
    while True:
        chunk = sys.stdin.buffer.read(1 << 20)
        if not chunk:
            break
        out.write(chunk)
        digest.update(chunk)
        size += len(chunk)
print(json.dumps({'size': size, 'sha256': digest.hexdigest()}))
"""


class SSHSpec(TargetSpec):
    """How to reach one device: a ``targets.yaml`` entry (``kind: ssh``, the default), or an ``ssh://`` URL.

    Only ``host`` is required; everything else falls back to the user's ssh configuration (user, port, key)
    or to edgekd's defaults (``python3`` on the device's PATH, the recipe's ``profile.threads``).
    """

    path_fields = ("identity_file", "ssh_config")

    host: str = Field(description="Host name, address, or a Host alias from ~/.ssh/config.")
    user: str | None = Field(None, description="Remote user (default: ssh config, else the local user).")
    port: int | None = Field(None, ge=1, le=65535, description="SSH port (default: ssh config, else 22).")
    python: str = Field("python3", description="Python on the device that has numpy and onnxruntime.")
    identity_file: str | None = Field(None, description="Private key file (default: ssh config / agent).")
    ssh_config: str | None = Field(None, description="An ssh_config file to use instead of ~/.ssh/config.")
    connect_timeout_s: int = Field(10, ge=1, le=600, description="SSH ConnectTimeout in seconds.")

    @field_validator("host", "user")
    @classmethod
    def _no_option_injection(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value or value.startswith("-") or re.search(r"[\s@/'\"`$;&|<>\\]", value):
            raise ValueError("must be a plain name or address (no spaces, quotes, '@', '/', leading '-')")
        return value

    @field_validator("python")
    @classmethod
    def _python_path(cls, value: str) -> str:
        if not value.strip() or value.startswith("-") or "\n" in value:
            raise ValueError("must be a command name or path, e.g. python3 or /home/pi/venv/bin/python")
        return value

    @property
    def destination(self) -> str:
        """``user@host`` (or ``host``) as ssh expects it."""
        return f"{self.user}@{self.host}" if self.user else self.host

    def describe(self) -> str:
        """``user@host:port`` for messages (the port only when set)."""
        return self.destination + (f":{self.port}" if self.port else "")


@TARGETS.register("ssh")
class SSHTarget(DeviceTarget):
    """Profile on a remote device over SSH with the device's own Python, numpy and onnxruntime.

    Selected by an ``ssh://user@host[:port]`` URL or by a named target from ``targets.yaml`` (see
    :mod:`edgekd.profile.resolve`), not by the bare name ``ssh``. The device needs Python >= 3.8 with
    numpy and onnxruntime (``pip install onnxruntime numpy``) and ``mktemp``; its sshd needs no SFTP (files
    travel through the ssh channel itself) and edgekd is not installed there. The bare-interpreter baseline
    is measured on the device, once per target. :meth:`check` verifies a device step by step (``edgekd
    targets --check NAME``). Defaults: ``python3`` from the device's PATH, ``ConnectTimeout=10``, the recipe's threads.

    Recipe::

        profile:
          targets: ["ssh://pi@raspberrypi.local:22", pi5]
          threads: [1, 0]

    targets.yaml::

        targets:
          pi5: {kind: ssh, host: 192.168.1.50, user: pi, threads: [1, 4]}   # kind: ssh is the default
    """

    name = "ssh"
    scheme = "ssh"
    Spec = SSHSpec
    url_form = "ssh://user@host[:port]"
    spec: SSHSpec

    def __init__(self, spec: SSHSpec, name: str | None = None) -> None:
        super().__init__(spec, name or f"ssh://{spec.describe()}")
        self._preflight: dict[str, Any] | None = None
        for label, value in (("identity_file", spec.identity_file), ("ssh_config", spec.ssh_config)):
            if value is not None and not Path(value).is_file():
                raise InputError(f"target {self.name}: {label} {value} not found; fix the path")

    # ------------------------------------------------------------------------------------------ the API
    @classmethod
    def parse_url(cls, url: str) -> SSHSpec:
        return parse_ssh_url(url)

    def run_probe(self, model_path: Path | None, settings: ProbeSettings) -> dict[str, Any]:
        """Copy the probe (and model) to a fresh remote directory, run it there, return its JSON answer.

        Raises:
            InputError: the model file does not exist locally.
            EdgekdError: unreachable host, failed authentication, unknown or changed host key, no usable
                Python/numpy/onnxruntime on the device, a probe failure or crash, or a timeout.
        """
        files = [PROBE_PATH]
        remote_model = None
        if model_path is not None:
            model_path = Path(model_path).resolve()
            if not model_path.is_file():
                raise InputError(f"{model_path}: ONNX file not found")
            files.append(model_path)
            remote_model = model_path.name if _SAFE_NAME.fullmatch(model_path.name) else "model.onnx"
        preflight = self.preflight()
        remote_dir = self._make_remote_dir()
        started = False
        try:
            self._copy(files, remote_dir, remote_model)
            args = ["--baseline"] if remote_model is None else [remote_model, *settings.argv()]
            started = True
            done = self._run_remote(remote_dir, args, settings.timeout_s, model_path)
        finally:
            if not started:
                self._remove_remote_dir(remote_dir)
        answer = self._parse(done, model_path)
        answer.setdefault("device", {})["ssh"] = {
            "destination": self.spec.describe(),
            "python": preflight["executable"],
            "python_version": preflight["python"],
            "notes": self.spec.notes,
        }
        if remote_model is not None:
            answer["model"] = str(model_path)
        return answer

    def preflight(self) -> dict[str, Any]:
        """Check once that the device's Python is >= 3.8 and imports numpy and onnxruntime (cached).

        Returns:
            ``{"python": "3.11.2", "executable": "/usr/bin/python3", "onnxruntime": "1.18.0"}``.

        Raises:
            EdgekdError: the device is unreachable or refuses us (as in :meth:`run_probe`), or the first
                failed step of :meth:`check` (missing modules are named together, with one install command).
        """
        if self._preflight is not None:
            return self._preflight
        checks, steps = self._inspect()
        reason = preflight_error(checks, steps, self.spec.describe())
        if reason is not None:
            raise EdgekdError(f"target {self.name}: {reason}")
        python = steps["python"]
        self._preflight = {
            "python": python["version"],
            "executable": python.get("executable") or self.spec.python,
            "onnxruntime": steps["onnxruntime"]["version"],
        }
        log.debug(
            "ssh target %s: Python %s at %s", self.name, python["version"], self._preflight["executable"]
        )
        return self._preflight

    def check(self) -> list[Check]:
        """Verify the device step by step: ssh (reachable, host key, auth), Python >= 3.8, numpy, onnxruntime.

        Why it shares :meth:`preflight`'s connection and script: what this reports as ok is exactly what a
        measurement needs. It never raises for a device problem; a step after a failed one is ``skip``.

        Returns:
            One :class:`~edgekd.profile.checks.Check` per step, in that order.
        """
        try:
            checks, _steps = self._inspect()
        except EdgekdError as exc:
            return [Check("ssh", "fail", str(exc).removeprefix(f"target {self.name}: ")), *skipped("ssh")]
        user = f" (as {self.spec.user})" if self.spec.user else ""
        return [Check("ssh", "ok", f"reached; host key and authentication{user} accepted"), *checks]

    # ---------------------------------------------------------------------------------------- the steps
    def _make_remote_dir(self) -> str:
        done = self._ssh(
            'umask 077 && mktemp -d "${TMPDIR:-/tmp}/edgekd.XXXXXXXX"',
            CONTROL_TIMEOUT_S,
            "creating a temp dir",
        )
        remote_dir = _last_line(done.stdout)
        if done.returncode != 0 or not _REMOTE_DIR.fullmatch(remote_dir):
            raise EdgekdError(
                f"target {self.name}: could not create a temporary directory on {self.spec.describe()} "
                f"({_last_line(done.stderr) or remote_dir or 'no output'}); check free space in /tmp there"
            )
        return remote_dir

    def _inspect(self) -> tuple[list[Check], dict[str, dict[str, Any]]]:
        """Run the checks script on the device (one connection); a connection-level failure raises."""
        what = "checking the device"
        done = self._ssh(preflight_command(_remote_word(self.spec.python)), CONTROL_TIMEOUT_S, what)
        if done.returncode == 255 and not done.stdout.strip():  # ssh failed, for a reason not classified
            raise self._failure(done, what)
        return read_preflight(done, self.spec.python, self.spec.describe())

    def _copy(self, files: list[Path], remote_dir: str, remote_model: str | None) -> None:
        copies = [(files[0], "probe.py")] + ([(files[1], remote_model)] if remote_model else [])
        for local, remote_name in copies:
            self._send(local, f"{remote_dir}/{remote_name}")

    def _send(self, local: Path, remote_path: str) -> None:
        """Pipe ``local`` into the device's Python, which writes ``remote_path`` and answers its size and SHA-256.

        Why not scp: see the module docstring (an sshd without SFTP breaks it); this needs only the channel.

        Raises:
            EdgekdError: the connection failed, the device could not write the file (e.g. a full disk), or
                the copy arrived with another size or hash than the local file's; the message names the file
                and the transfer.
        """
        what = f"copying {local.name} over {TRANSFER}"
        script = f"{_remote_word(self.spec.python)} -c {shlex.quote(_RECEIVE)} {shlex.quote(remote_path)}"
        with open(local, "rb") as source:
            done = self._ssh(script, COPY_TIMEOUT_S, what, stdin=source)
        where = f"{self.spec.describe()}:{remote_path}"
        got = _last_json(done.stdout)
        if done.returncode == 255 and got is None:  # ssh failed, for a reason not classified
            raise self._failure(done, what)
        if done.returncode != 0 or got is None:
            raise EdgekdError(
                f"target {self.name}: {what} to {where} failed "
                f"({_last_line(done.stderr) or f'exit code {done.returncode}'}); check free space there"
            )
        size, sha256 = _file_digest(local)
        if (got.get("size"), got.get("sha256")) != (size, sha256):
            raise EdgekdError(
                f"target {self.name}: {local.name} arrived changed at {where} ({got.get('size')} of {size} "
                f"bytes, sha256 {str(got.get('sha256'))[:12]} instead of {sha256[:12]}) over {TRANSFER}; "
                "check free space there and the link, then retry"
            )

    def _run_remote(
        self, remote_dir: str, args: list[str], timeout_s: float, model: Path | None
    ) -> subprocess.CompletedProcess[str]:
        d, py = shlex.quote(remote_dir), _remote_word(self.spec.python)
        probe = " ".join([py, "probe.py", *(shlex.quote(a) for a in args)])
        script = (
            f"d={d}\ntrap 'rm -rf \"$d\"' EXIT\ntrap 'exit 129' HUP INT TERM\ncd \"$d\" || exit 1\n"
            f"if command -v timeout >/dev/null 2>&1; then timeout {int(timeout_s) + 1} {probe}; "
            f"else {probe}; fi"
        )
        what = "the baseline" if model is None else model.name
        try:
            done = self._ssh(script, timeout_s + self.spec.connect_timeout_s + 30, f"measuring {what}")
        except EdgekdError:
            self._remove_remote_dir(remote_dir)  # the trap may not have run if the connection died
            raise
        if done.returncode == 124:  # GNU/BusyBox timeout on the device killed the probe
            raise self._timeout(f"measuring {what}", timeout_s)
        if done.returncode == 255 and not done.stdout.strip():
            self._remove_remote_dir(remote_dir)
            raise self._failure(done, f"measuring {what}")
        return done

    def _parse(self, done: subprocess.CompletedProcess[str], model: Path | None) -> dict[str, Any]:
        code = done.returncode
        if 128 < code < 160 and not done.stdout.strip():
            code = -(code - 128)  # the remote shell reports death by signal N as 128+N
        try:
            return parse_probe_output(done.stdout, done.stderr, code, where=self.name)
        except EdgekdError as exc:
            if "probe needs numpy and onnxruntime" in str(exc):
                raise EdgekdError(f"{exc}; install them on the device: {INSTALL_HINT}") from None
            raise

    def _remove_remote_dir(self, remote_dir: str) -> None:
        """Best effort: a cleanup failure is logged, never raised over the error that led here."""
        try:
            self._ssh(f"rm -rf {shlex.quote(remote_dir)}", CONTROL_TIMEOUT_S, "cleaning up")
        except EdgekdError as exc:
            log.warning("ssh target %s: could not remove %s: %s", self.name, remote_dir, exc)

    # ------------------------------------------------------------------------------------------ transport
    def _options(self, port_flag: str) -> list[str]:
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.spec.connect_timeout_s}"]
        opts += ["-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4", "-o", "ControlMaster=no"]
        if self.spec.ssh_config:
            opts += ["-F", self.spec.ssh_config]
        if self.spec.identity_file:
            opts += ["-i", self.spec.identity_file, "-o", "IdentitiesOnly=yes"]
        if self.spec.port:
            opts += [port_flag, str(self.spec.port)]
        return opts

    def _ssh(
        self, script: str, timeout_s: float, what: str, stdin: IO[bytes] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``script`` with ``sh -c`` on the device, fed ``stdin`` (default: nothing).

        A connection-level failure (exit 255 with a known OpenSSH message) raises.
        """
        cmd = [
            "ssh",
            "-T",
            *self._options(port_flag="-p"),
            self.spec.destination,
            "sh -c " + shlex.quote(script),
        ]
        done = self._call(cmd, timeout_s, what, stdin)
        if done.returncode == 255 and _classify(done.stderr) != "other":
            raise self._failure(done, what)
        return done

    def _call(
        self, cmd: list[str], timeout_s: float, what: str, stdin: IO[bytes] | None = None
    ) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                stdin=subprocess.DEVNULL if stdin is None else stdin,
                check=False,
            )
        except FileNotFoundError:
            raise EdgekdError(
                f"target {self.name}: the OpenSSH client ('{cmd[0]}') is not installed here; install "
                "openssh-client"
            ) from None
        except subprocess.TimeoutExpired:
            raise self._timeout(what, timeout_s) from None

    def _timeout(self, what: str, timeout_s: float) -> EdgekdError:
        """A timeout's advice depends on the step: only the probe's own time is the recipe's to change."""
        if what.startswith("measuring"):
            return EdgekdError(
                f"profiling probe on {self.name} timed out after {timeout_s:g} s {what}; raise "
                "profile.timeout_s or lower profile.runs / profile.time_budget_s"
            )
        return EdgekdError(
            f"target {self.name}: no answer from {self.spec.describe()} within {timeout_s:g} s while {what}; "
            "check the device's load and the link to it"
        )

    def _failure(self, done: subprocess.CompletedProcess[str], what: str) -> EdgekdError:
        detail = _last_line(done.stderr) or f"exit code {done.returncode}"
        where, host = self.spec.describe(), self.spec.host
        port = self.spec.port or 22
        kind = _classify(done.stderr)
        if kind == "hostkey_changed":
            msg = (
                f"the host key of {where} does NOT match known_hosts (a reinstalled device, or a "
                f"man-in-the-middle); if the change is expected, remove the old key with ssh-keygen -R "
                f"'[{host}]:{port}' (or '{host}' for port 22) and add the new one"
            )
        elif kind == "hostkey_unknown":
            msg = (
                f"the host key of {where} is not in known_hosts ({detail}); verify it and add it "
                f"(ssh-keyscan -p {port} {host} >> ~/.ssh/known_hosts, or connect once with ssh); edgekd "
                "never accepts unknown keys"
            )
        elif kind == "auth":
            msg = (
                f"authentication to {where} failed ({detail}); check the user and key (identity_file or "
                "ssh-agent) and that the public key is in the device's ~/.ssh/authorized_keys (edgekd runs "
                "ssh with BatchMode=yes, so it cannot answer password prompts)"
            )
        elif kind == "unreachable":
            msg = (
                f"cannot reach {where} ({detail}) while {what}; check that the device is on and reachable, "
                "the address and port, and that sshd runs there"
            )
        else:
            msg = f"ssh to {where} failed while {what} ({detail})"
        return EdgekdError(f"target {self.name}: {msg}")


def _classify(stderr: str) -> str:
    """What an OpenSSH client failure was, from its stderr (messages are stable across OpenSSH 7-9)."""
    text = stderr.lower()
    if "remote host identification has changed" in text or "host key for" in text and "has changed" in text:
        return "hostkey_changed"
    if "host key verification failed" in text or re.search(r"no \S+ host key is known", text):
        return "hostkey_unknown"
    if "permission denied" in text or "too many authentication failures" in text:
        return "auth"
    unreachable = (
        "connection refused",
        "timed out",
        "no route to host",
        "network is unreachable",
        "could not resolve hostname",
        "name or service not known",
        "connection reset",
        "connection closed",
        "kex_exchange_identification",
        "broken pipe",
    )
    return "unreachable" if any(s in text for s in unreachable) else "other"


def _remote_word(value: str) -> str:
    """A command name/path for the remote shell: quoted, with a leading ``~/`` kept as ``$HOME``."""
    if value.startswith("~/"):
        return '"$HOME"/' + shlex.quote(value[2:])
    return shlex.quote(value)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _file_digest(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of a local file, read in 1 MiB chunks (a model may be hundreds of MB)."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as source:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _last_json(text: str) -> dict[str, Any] | None:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    try:
        value = json.loads(lines[-1] if lines else "null")
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def parse_ssh_url(url: str) -> SSHSpec:
    """``ssh://[user@]host[:port][?field=value&...]`` → :class:`SSHSpec`.

    Raises:
        InputError: not an ssh URL, a path part, a bad port, or an invalid/unknown query field.

    >>> parse_ssh_url("ssh://pi@[fe80::1]:2222?python=/opt/venv/bin/python").python
    '/opt/venv/bin/python'
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InputError(f"target {url}: not a valid ssh URL ({exc}); write ssh://user@host[:port]") from None
    if parts.scheme != "ssh" or not parts.hostname or parts.path not in ("", "/") or parts.fragment:
        raise InputError(f"target {url}: not a valid ssh URL; write ssh://user@host[:port]")
    if parts.password is not None:
        raise InputError(f"target {url}: passwords in URLs are not supported; use a key (identity_file)")
    fields: dict[str, Any] = {"host": parts.hostname}
    if parts.username:
        fields["user"] = unquote(parts.username)
    if port is not None:
        fields["port"] = port
    return cast(SSHSpec, SSHTarget.spec_from_url(url, fields, url_keys=("host", "user", "port")))
