"""Where fitted latency models are kept, under which key, and how a stale one is recognised.

A latency model holds only for the device, runtime, thread count, batch and architecture it was measured
with, so its file is keyed by all of them (:class:`CacheKey`): the device identity as the probe reports it
(CPU model, board, machine, cores, Jetson power mode), the onnxruntime version and execution provider, the
intra-op threads, the batch, and the width-free architecture hash (:func:`~edgekd.latency.graph.
architecture_hash`), so a student pruned from a calibrated teacher finds the teacher's model. A file for the
same architecture, threads and batch under another key (onnxruntime upgraded, another CPU, an older format)
is *stale*: :func:`lookup` names what changed and never returns it.

Directory: ``$EDGEKD_LATENCY_CACHE``, else the recipe's ``profile.latency_cache``, else
``~/.cache/edgekd/latency``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgekd.io import write_text
from edgekd.latency.predictor import LatencyModel

log = logging.getLogger("edgekd")

CACHE_ENV = "EDGEKD_LATENCY_CACHE"
DEFAULT_CACHE = Path("~/.cache/edgekd/latency")
FORMAT = 2  # bump when the fitted model's meaning changes: older files become stale (2: misalignment term)


@dataclass(frozen=True)
class CacheKey:
    """What a latency model is valid for; two models with equal keys are interchangeable."""

    device: str
    onnxruntime: str
    provider: str
    threads: int
    batch: int
    model: str
    format: int = FORMAT

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]

    def filename(self) -> str:
        return f"{self.model}-t{self.threads}-b{self.batch}-{self.digest()}.json"


def device_identity(device: dict[str, Any]) -> str:
    """The device as the probe describes it, without what changes between runs (frequency, temperature).

    ``local`` and an ssh target reaching the same machine share it: they are the same device.
    """
    nvp = device.get("nvpmodel") or {}
    parts = (device.get("cpu"), device.get("board"), device.get("machine"), device.get("logical_cores"))
    return " | ".join(str(p) for p in (*parts, nvp.get("name")) if p not in (None, ""))


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """``$EDGEKD_LATENCY_CACHE``, else ``override`` (the recipe's ``profile.latency_cache``), else the default."""
    env = os.environ.get(CACHE_ENV)
    chosen = env or override or DEFAULT_CACHE
    return Path(os.path.expanduser(str(chosen)))


def store(model: LatencyModel, key: CacheKey, directory: Path) -> Path:
    """Write ``model`` under ``key`` (atomically) and return its path."""
    path = directory / key.filename()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(model.to_json(), indent=1))
    return path


@dataclass(frozen=True)
class Lookup:
    """What :func:`lookup` found: the valid model (or ``None``) and why each near miss is stale."""

    model: LatencyModel | None
    path: Path | None
    stale: tuple[str, ...] = ()


def lookup(key: CacheKey, directory: Path) -> Lookup:
    """The cached model for ``key``; files of the same architecture/threads/batch with another key are stale.

    A file whose name matches but whose stored key differs (edited, or written by another format) is stale
    too: the stored key, not the file name, is what is trusted.
    """
    path = directory / key.filename()
    stale = []
    for other in sorted(directory.glob(f"{key.model}-t{key.threads}-b{key.batch}-*.json")):
        stored = _read_key(other)
        if stored == asdict(key):
            continue
        changed = [f"{k} {stored.get(k)!r} -> {v!r}" for k, v in asdict(key).items() if stored.get(k) != v]
        stale.append(f"{other.name}: {', '.join(changed) or 'unreadable'}")
    if path.is_file() and _read_key(path) == asdict(key):
        try:
            return Lookup(LatencyModel.from_json(json.loads(path.read_text())), path, tuple(stale))
        except (ValueError, KeyError, TypeError) as exc:
            stale.append(f"{path.name}: unreadable ({type(exc).__name__})")
    if stale:
        log.info("latency model: stale cache entries not reused: %s", "; ".join(stale))
    return Lookup(None, None, tuple(stale))


def _read_key(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return dict(data["key"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}
