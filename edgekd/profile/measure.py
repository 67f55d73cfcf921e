"""Profiling ONNX files on targets: files in, :class:`~edgekd.results.Profile` records out.

Choices the report relies on:

* ``Profile.threads`` is the intra-op thread count ORT actually used. A recipe's ``0`` ("all cores") is
  resolved by the probe (it counts the pool's threads) and the requested value is kept in
  ``device["threads_requested"]``, so a report never shows "0 threads".
* ``Profile.peak_rss_mb`` is the probe process's peak RSS minus the peak of the same interpreter with numpy
  and onnxruntime imported but no session (the target's baseline, measured once per target and cached): what
  loading and running this model adds, comparable across models. Both raw numbers are kept in
  ``device["measurement"]``.
* ``device`` also carries the onnxruntime version/providers, the input shapes fed, the stop reason of the
  adaptive protocol and the device state (frequency, temperature, throttling) before and after timing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tqdm import tqdm

from edgekd.onnxfile import check_onnx_file
from edgekd.profile.target import ProbeSettings, Target
from edgekd.recipe.schema import ProfileConfig
from edgekd.results import LatencyStats, Profile

log = logging.getLogger("edgekd")

_INSTANCES: dict[str, Target] = {}


def get_target(name: str) -> Target:
    """The (cached) Target for ``name``: a registered target, a kind's URL (``ssh://``) or a ``targets.yaml`` name.

    Cached per name so a target's baseline (and an ssh target's preflight) is measured once per process.
    Unknown names raise InputError with the valid choices (see :func:`~edgekd.profile.resolve.resolve_target`).
    """
    if name not in _INSTANCES:
        from edgekd.profile.resolve import resolve_target

        _INSTANCES[name] = resolve_target(name)
    return _INSTANCES[name]


def to_profile(answer: dict[str, Any], baseline: dict[str, Any], target: str) -> Profile:
    """Turn one probe answer into a Profile, subtracting the target's bare-interpreter peak RSS."""
    peak, base = answer.get("peak_rss_mb"), baseline.get("peak_rss_mb")
    rss = max(0.0, peak - base) if peak is not None and base is not None else 0.0
    device = dict(answer["device"])
    device.update(
        threads_requested=answer["threads_requested"],
        onnxruntime=answer["onnxruntime"],
        inputs=answer["inputs"],
        measurement={
            "stop_reason": answer["stop_reason"],
            "median_ci_rel": answer["median_ci_rel"],
            "min_time_s": answer.get("min_time_s"),
            "measure_s": answer["measure_s"],
            "warmup": answer["warmup"],
            "peak_rss_total_mb": peak,
            "baseline_rss_mb": base,
        },
    )
    for extra in ("op_profile", "tensorrt"):  # optional measurements, kept beside the device they ran on
        if extra in answer:
            device[extra] = answer[extra]
    return Profile(
        target=target,
        device=device,
        threads=int(answer["intra_op_threads"]),
        batch=int(answer["batch"]),
        latency_ms=LatencyStats(
            **{k: float(answer["latency_ms"][k]) for k in LatencyStats.__dataclass_fields__}
        ),
        load_ms=float(answer["load_ms"]),
        peak_rss_mb=round(rss, 2),
        runs=int(answer["runs"]),
    )


def profile_model(onnx_path: Path, cfg: ProfileConfig, target: str = "local") -> list[Profile]:
    """Profile one ONNX file on one target: one Profile per entry of ``cfg.threads``, in that order.

    Args:
        onnx_path: the model to time.
        cfg: the recipe's ``profile`` section (batch, warmup, fixed runs or adaptive budget, bounds).
        target: a registered target name, a target kind's URL (``ssh://...``) or a ``targets.yaml`` name.

    Returns:
        The profiles, ``threads`` resolved to the count ORT used (see the module docstring).

    Raises:
        InputError: the file is missing or not valid ONNX, or the target is unknown.
        EdgekdError: the probe failed on the device (its message is included) or timed out.

    >>> profiles = profile_model(Path("run/student.onnx"), ProfileConfig(threads=[1]))  # doctest: +SKIP
    >>> profiles[0].latency_ms.p50  # doctest: +SKIP
    1.73
    """
    path = Path(onnx_path).resolve()
    check_onnx_file(path)
    device = get_target(target)
    baseline = device.baseline()
    profiles = []
    thread_counts = device.threads or cfg.threads  # a targets.yaml entry or URL may override
    for threads in tqdm(
        thread_counts, desc=f"profile {path.name} on {target}", unit="config", leave=False, disable=None
    ):
        answer = device.run_probe(path, ProbeSettings.from_config(cfg, threads))
        profile = to_profile(answer, baseline, target)
        log.info(
            "profiled %s on %s: threads=%d batch=%d p50=%.3f p90=%.3f ms (%d runs, %s) load %.1f ms %.1f MiB",
            path.name,
            target,
            profile.threads,
            profile.batch,
            profile.latency_ms.p50,
            profile.latency_ms.p90,
            profile.runs,
            answer["stop_reason"],
            profile.load_ms,
            profile.peak_rss_mb,
        )
        profiles.append(profile)
    return profiles


def profile_files(onnx_paths: dict[str, Path], cfg: ProfileConfig) -> dict[str, list[Profile]]:
    """Profile every named artifact on every target of ``cfg.targets``.

    All files and target names are checked before anything is timed, so a typo fails in seconds.

    Returns:
        ``{artifact name: [Profile, ...]}``, grouped by target in ``cfg.targets`` order, then thread count.
    """
    for path in onnx_paths.values():
        check_onnx_file(path)
    for name in cfg.targets:
        get_target(name)
    results: dict[str, list[Profile]] = {}
    for artifact, path in onnx_paths.items():
        results[artifact] = [p for target in cfg.targets for p in profile_model(path, cfg, target)]
    return results
