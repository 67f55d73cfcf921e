"""From a target name in a recipe or on the command line to a :class:`~edgekd.profile.target.Target`.

A name is resolved in this order, first match wins:

1. a registered plain target (``local``);
2. a ``<scheme>://...`` URL, parsed by the target kind registered for that scheme. For ``ssh``:
   ``ssh://[user@]host[:port]``; any ``targets.yaml`` field other than host/user/port may be given as a query
   parameter: ``ssh://pi@pi5.local?python=/home/pi/venv/bin/python&threads=1,4``;
3. a named target in ``targets.yaml``, read from ``$EDGEKD_TARGETS`` if set, else ``./targets.yaml``. Its
   ``kind:`` (default ``ssh``) names the target kind; the other keys are validated against that kind's spec.

Why a separate file for devices: host names, users and key paths describe the lab, not the compression
experiment, so one recipe can be profiled on different benches by pointing ``EDGEKD_TARGETS`` elsewhere,
and a recipe committed to a repository carries no addresses. ``targets.yaml``::

    targets:
      pi5:
        kind: ssh                   # the target kind (default ssh); its spec lists the keys below
        host: 192.168.1.50          # or a Host alias from ~/.ssh/config
        user: pi
        port: 22
        python: /home/pi/venv/bin/python
        identity_file: ~/.ssh/id_ed25519   # relative paths: against this file's directory
        threads: [1, 4]                    # overrides profile.threads on this device (every kind)
        notes: Raspberry Pi 5 8 GB, active cooler, 64-bit Raspberry Pi OS

Kinds are the :class:`~edgekd.profile.target.DeviceTarget` subclasses in the ``TARGETS`` registry: each
declares its ``scheme``, its ``Spec`` and ``parse_url``, so nothing here names a kind but the default.
Resolving never connects; the first measurement does. :func:`list_targets` and :func:`check_target` back
``edgekd targets [--check NAME]``; the check is the one function here that connects (through the kind's own
``check()``, so what it reports is what a measurement meets).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edgekd.errors import InputError
from edgekd.profile import TARGETS
from edgekd.profile.checks import Check
from edgekd.profile.target import DeviceTarget, Target, TargetSpec, expand_path
from edgekd.recipe.validation import validate_params
from edgekd.registry import did_you_mean

TARGETS_ENV = "EDGEKD_TARGETS"
TARGETS_FILE = "targets.yaml"
DEFAULT_KIND = "ssh"
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")  # RFC 3986 scheme, then the authority's '//'


@dataclass(frozen=True)
class TargetEntry:
    """One configured target as ``edgekd targets`` lists it.

    ``kind`` is the registered name of a plain target (``local``) or the kind of a ``targets.yaml`` entry
    (``ssh``); ``address`` is where it runs (``pi@192.168.1.50:22``, or ``this machine``).
    """

    name: str
    kind: str
    address: str
    threads: tuple[int, ...] | None = None
    notes: str | None = None


@dataclass(frozen=True)
class TargetList:
    """Every target a name can select, and where named ones were looked for (``targets_file``).

    ``url_forms`` are the URL shapes of the registered kinds (``ssh://user@host[:port]``), which select a
    device without naming it anywhere.
    """

    targets: tuple[TargetEntry, ...]
    targets_file: str
    targets_file_found: bool
    url_forms: tuple[str, ...]


@dataclass(frozen=True)
class TargetCheck:
    """The answer of ``edgekd targets --check NAME``: one :class:`~edgekd.profile.checks.Check` per step."""

    target: str
    kind: str
    address: str
    checks: tuple[Check, ...]
    ok: bool


def targets_file() -> Path:
    """The ``targets.yaml`` in effect: ``$EDGEKD_TARGETS``, else ``./targets.yaml`` (may not exist)."""
    env = os.environ.get(TARGETS_ENV)
    return Path(os.path.expanduser(env)) if env else Path.cwd() / TARGETS_FILE


def resolve_target(name: str) -> Target:
    """A new, unconnected Target for ``name`` (registered name → ``<scheme>://`` URL → ``targets.yaml`` entry).

    Raises:
        InputError: a malformed URL or one of no registered scheme, an invalid ``targets.yaml``, a bare kind
            name (``ssh``), or a name that is none of the three (the message lists the registered and named
            targets, the URL forms, and says where ``targets.yaml`` was looked for).

    >>> resolve_target("ssh://pi@raspberrypi.local:2222").spec.port
    2222
    """
    registered = TARGETS.get(name) if name in TARGETS else None
    if registered is not None and not issubclass(registered, DeviceTarget):
        return registered()
    scheme = _SCHEME.match(name)
    if scheme:
        return kind_for_scheme(scheme.group(1).lower(), name).from_url(name)
    path = targets_file()
    entries = read_targets_file(path) if path.is_file() else {}
    if name in entries:
        kind, spec = entries[name]
        return kind(spec, name)
    if registered is not None:
        raise InputError(
            f"target '{name}' needs a device: write {registered.url_form} or the name of a target in "
            f"targets.yaml (kind: {name}; see edgekd/profile/resolve.py)"
        )
    options = [n for n, cls in _registered() if not issubclass(cls, DeviceTarget)] + sorted(entries)
    urls = ", ".join(kind.url_form for kind in device_kinds().values())
    where = f"{path}" if path.is_file() else f"no {path}"
    raise InputError(
        f"unknown target '{name}'{did_you_mean(name, options)} (valid: {', '.join(options)}; or {urls}; "
        f"named targets come from ${TARGETS_ENV} or ./{TARGETS_FILE}: {where})"
    )


def list_targets() -> TargetList:
    """The registered targets (``local``) and the entries of the ``targets.yaml`` in effect, in file order.

    Raises:
        InputError: the ``targets.yaml`` in effect is invalid (as :func:`read_targets_file`).

    >>> [t.name for t in list_targets().targets][:1]
    ['local']
    """
    path = targets_file()
    entries = read_targets_file(path) if path.is_file() else {}
    listed = [
        TargetEntry(n, n, cls().address) for n, cls in _registered() if not issubclass(cls, DeviceTarget)
    ]
    for name, (kind, spec) in entries.items():
        threads = tuple(spec.threads) if spec.threads is not None else None
        listed.append(TargetEntry(name, _kind_name(kind), spec.describe(), threads, spec.notes))
    forms = tuple(kind.url_form for kind in device_kinds().values())
    return TargetList(tuple(listed), str(path), path.is_file(), forms)


def check_target(name: str) -> TargetCheck:
    """Resolve ``name`` (a registered name, a URL or a ``targets.yaml`` name) and verify it step by step.

    A device is checked by its kind's ``check()`` (ssh: connection, host key, authentication, then the
    device's Python, numpy, onnxruntime); ``local`` by running the same script with this Python, which is
    what its probe runs with. A device problem is a failed check in the answer, never an exception.

    Raises:
        InputError: an unknown name or malformed URL (as :func:`resolve_target`).
    """
    target = resolve_target(name)
    checks = target.check()
    kind = _kind_name(type(target)) if isinstance(target, DeviceTarget) else name
    return TargetCheck(name, kind, target.address, tuple(checks), all(c.ok for c in checks))


def device_kinds() -> dict[str, type[DeviceTarget]]:
    """The registered target kinds by kind name (``{"ssh": SSHTarget}``); plain targets are left out."""
    return {n: cls for n, cls in _registered() if issubclass(cls, DeviceTarget)}


def kind_for_scheme(scheme: str, url: str) -> type[DeviceTarget]:
    """The kind registered for URL ``scheme``.

    Raises:
        InputError: no kind has that scheme (the message suggests the closest one and lists the URL forms).
    """
    kinds = {kind.scheme: kind for kind in device_kinds().values()}
    if scheme in kinds:
        return kinds[scheme]
    forms = ", ".join(kind.url_form for kind in kinds.values())
    raise InputError(
        f"target {url}: unknown scheme '{scheme}://'{did_you_mean(scheme, sorted(kinds))} (valid: {forms})"
    )


def device_kind(kind: str, where: str) -> type[DeviceTarget]:
    """The kind registered as ``kind`` (a ``targets.yaml`` entry's ``kind:``).

    Raises:
        InputError: ``{where}.kind: unknown target kind ...`` with the closest kind and the valid ones.
    """
    kinds = device_kinds()
    if kind in kinds:
        return kinds[kind]
    raise InputError(
        f"{where}.kind: unknown target kind '{kind}'{did_you_mean(kind, sorted(kinds))} "
        f"(valid: {', '.join(sorted(kinds))})"
    )


def validate_spec(fields: Mapping[str, Any], where: str, kind: str = DEFAULT_KIND) -> TargetSpec:
    """``fields`` validated against the spec of target kind ``kind``, as one-line InputErrors.

    >>> validate_spec({"host": "pi5.local", "threads": [1, 4]}, "bench").threads
    [1, 4]
    """
    return validate_params(device_kind(kind, where).Spec, dict(fields), where)


def read_targets_file(path: Path) -> dict[str, tuple[type[DeviceTarget], TargetSpec]]:
    """Read and validate a ``targets.yaml``: each entry's kind and its spec; relative paths resolve here.

    Raises:
        InputError: unreadable or malformed YAML, no ``targets:`` mapping, a reserved name, an unknown
            ``kind:``, or an invalid entry (the message names the entry and key).
    """
    targets = _read_yaml(path)
    entries: dict[str, tuple[type[DeviceTarget], TargetSpec]] = {}
    for name, entry in targets.items():
        where = f"{path}: targets.{name}"
        if not isinstance(entry, dict):
            raise InputError(f"{where}: expected a mapping of the target's fields (kind, host, ...)")
        if str(name) in TARGETS or "://" in str(name):
            raise InputError(f"{where}: the name is reserved (registered target or URL); rename it")
        fields = dict(entry)
        kind = device_kind(str(fields.pop("kind", DEFAULT_KIND)), where)
        for key in kind.Spec.path_fields:
            if isinstance(fields.get(key), str):
                fields[key] = expand_path(fields[key], path.resolve().parent)
        entries[str(name)] = (kind, validate_params(kind.Spec, fields, where))
    return entries


def load_targets_file(path: Path) -> dict[str, TargetSpec]:
    """The specs of a ``targets.yaml`` by name, each of its entry's kind (see :func:`read_targets_file`)."""
    return {name: spec for name, (_kind, spec) in read_targets_file(path).items()}


def _read_yaml(path: Path) -> dict[Any, Any]:
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
        raise InputError(f"{path}: expected a 'targets:' mapping of name -> {{kind, host, user, port, ...}}")
    return targets


def _registered() -> list[tuple[str, type[Target]]]:
    return [(name, TARGETS.get(name)) for name in TARGETS]


def _kind_name(kind: type[DeviceTarget]) -> str:
    return next(name for name, cls in device_kinds().items() if cls is kind)
