"""From a target name in a recipe or on the command line to a :class:`~edgekd.profile.target.Target`.

A name is resolved in this order, first match wins:

1. a registered target (``local``);
2. an ``ssh://[user@]host[:port]`` URL; any ``targets.yaml`` field other than host/user/port may be given as
   a query parameter: ``ssh://pi@pi5.local?python=/home/pi/venv/bin/python&threads=1,4``;
3. a named target in ``targets.yaml``, read from ``$EDGEKD_TARGETS`` if set, else ``./targets.yaml``.

Why a separate file for devices: host names, users and key paths describe the lab, not the compression
experiment, so one recipe can be profiled on different benches by pointing ``EDGEKD_TARGETS`` elsewhere,
and a recipe committed to a repository carries no addresses. ``targets.yaml``::

    targets:
      pi5:
        host: 192.168.1.50          # or a Host alias from ~/.ssh/config
        user: pi
        port: 22
        python: /home/pi/venv/bin/python
        identity_file: ~/.ssh/id_ed25519   # relative paths: against this file's directory
        threads: [1, 4]                    # overrides profile.threads on this device
        notes: Raspberry Pi 5 8 GB, active cooler, 64-bit Raspberry Pi OS

Resolving never connects; the first measurement does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import yaml
from pydantic import ValidationError

from edgekd.errors import InputError
from edgekd.profile import TARGETS
from edgekd.profile.ssh import SSHSpec, SSHTarget, expand_path
from edgekd.profile.target import Target
from edgekd.registry import did_you_mean

TARGETS_ENV = "EDGEKD_TARGETS"
TARGETS_FILE = "targets.yaml"
_PATH_FIELDS = ("identity_file", "ssh_config")


def targets_file() -> Path:
    """The ``targets.yaml`` in effect: ``$EDGEKD_TARGETS``, else ``./targets.yaml`` (may not exist)."""
    env = os.environ.get(TARGETS_ENV)
    return Path(os.path.expanduser(env)) if env else Path.cwd() / TARGETS_FILE


def resolve_target(name: str) -> Target:
    """A new, unconnected Target for ``name`` (registered name → ``ssh://`` URL → ``targets.yaml`` entry).

    Raises:
        InputError: a malformed URL, an invalid ``targets.yaml``, or a name that is none of the three (the
            message lists the registered and named targets and says where ``targets.yaml`` was looked for).

    >>> resolve_target("ssh://pi@raspberrypi.local:2222").spec.port
    2222
    """
    if name in TARGETS and name != "ssh":
        return TARGETS.get(name)()
    if name.startswith("ssh://"):
        return SSHTarget(parse_ssh_url(name), name=name)
    path = targets_file()
    named = load_targets_file(path) if path.is_file() else {}
    if name in named:
        return SSHTarget(named[name], name=name)
    if name == "ssh":
        return SSHTarget()  # raises with the URL form
    options = [n for n in TARGETS.names() if n != "ssh"] + sorted(named)
    where = f"{path}" if path.is_file() else f"no {path}"
    raise InputError(
        f"unknown target '{name}'{did_you_mean(name, options)} (valid: {', '.join(options)}; or "
        f"ssh://user@host[:port]; named targets come from ${TARGETS_ENV} or ./{TARGETS_FILE}: {where})"
    )


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
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in ("host", "user", "port"):
            raise InputError(f"target {url}: give {key} in the URL itself, not as ?{key}=")
        if key == "threads":
            try:
                fields[key] = [int(t) for t in value.split(",") if t.strip()]
            except ValueError:
                raise InputError(
                    f"target {url}: threads must be comma-separated integers, e.g. 1,4"
                ) from None
        else:
            fields[key] = value
    for key in _PATH_FIELDS:
        if isinstance(fields.get(key), str):
            fields[key] = expand_path(fields[key], Path.cwd())
    return _validate(fields, f"target {url}")


def load_targets_file(path: Path) -> dict[str, SSHSpec]:
    """Read and validate a ``targets.yaml``; relative key/config paths resolve against its directory.

    Raises:
        InputError: unreadable or malformed YAML, no ``targets:`` mapping, or an invalid entry (the message
            names the entry and key).
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read targets file ({exc.__class__.__name__})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise InputError(f"{path}: malformed YAML{where}; fix the targets file") from None
    targets = data.get("targets") if isinstance(data, dict) else None
    if not isinstance(targets, dict):
        raise InputError(f"{path}: expected a 'targets:' mapping of name -> {{host, user, port, ...}}")
    specs: dict[str, SSHSpec] = {}
    for name, entry in targets.items():
        where = f"{path}: targets.{name}"
        if not isinstance(entry, dict):
            raise InputError(f"{where}: expected a mapping with at least 'host'")
        if str(name) in TARGETS or str(name).startswith("ssh://"):
            raise InputError(f"{where}: the name is reserved (registered target or URL); rename it")
        entry = dict(entry)
        for key in _PATH_FIELDS:
            if isinstance(entry.get(key), str):
                entry[key] = expand_path(entry[key], path.resolve().parent)
        specs[str(name)] = _validate(entry, where)
    return specs


def _validate(fields: dict[str, Any], where: str) -> SSHSpec:
    from edgekd.recipe.load import format_validation_error

    valid = sorted(SSHSpec.model_fields)
    for key in fields:  # before pydantic, whose first error for a typo'd 'hots' would be "host: missing"
        if key not in valid:
            hint = did_you_mean(str(key), valid) or f" (valid: {', '.join(valid)})"
            raise InputError(f"{where}: {key}: unknown key{hint}")
    try:
        return SSHSpec.model_validate(fields)
    except ValidationError as exc:
        raise InputError(f"{where}: {format_validation_error(exc, SSHSpec)}") from None
