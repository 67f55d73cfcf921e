"""Standalone ONNX Runtime latency/memory probe: one file, copied to and run on the device being measured.

Why standalone: the same file must run on this machine (the ``local`` target) and on a Raspberry Pi or Jetson
over SSH, where only Python >= 3.8, numpy and onnxruntime exist. So: no edgekd import, no syntax newer than
3.8, and the whole answer is ONE JSON object on stdout (errors too: ``{"error": "..."}`` with exit code 1;
exit code 2 when the request cannot be met as asked: bad arguments, an execution provider this onnxruntime
lacks, a dynamic input dimension with no size). Why a fresh process per measurement: peak RSS is a per-process
high-water mark, so only a process that loaded nothing but this model reports that model's memory (see
:func:`peak_rss_mb`); ``--baseline`` reports the same interpreter with numpy + onnxruntime imported and no
session, so the caller can subtract it.

Protocol of one measurement:
  1. create the session (timed: ``load_ms``) on ``--provider`` (default CPU; the providers the session really
     registered are recorded); intra-op threads as asked (0 = ORT's default; the pool size actually created is
     recorded), ``inter_op_num_threads=1``, sequential execution;
  2. one inference on random inputs, timed on its own (``latency_ms.first``, excluded from the statistics).
     Input shapes: ``--shape INPUT=1x3x224x224``, else per axis its fixed size, ``--dim NAME=SIZE``, ``--batch``
     for a dynamic axis 0, or the size edgekd's export recorded (``input_shape`` metadata); any other dynamic
     axis is refused (exit 2) unless ``--dim-default`` is given, since a 1x1 image would time nothing;
  3. ``--warmup`` untimed inferences;
  4. timed inferences: exactly ``--runs``, or adaptively under ``--time-budget`` seconds: keep going until
     the distribution-free 95% confidence interval of the MEDIAN (order statistics, normal approximation to
     the binomial) lies within ``±--ci-target`` of the median, the budget is spent, or ``--max-runs`` is
     reached; ``--min-runs`` is a floor that wins over the budget, and the CI is only consulted after
     ``--min-time`` seconds (default: half the budget) so tail percentiles have samples. Warmup is not
     charged to the budget.

Usage::

    python probe.py model.onnx --threads 1 --batch 1 --warmup 5 --time-budget 3
    python probe.py model.onnx --threads 0 --runs 200 --op-profile
    python probe.py model.onnx --dim height=224 --dim width=224 --provider CUDAExecutionProvider
    python probe.py model.onnx --shape input=1x3x224x224
    python probe.py model.onnx --tensorrt --tensorrt-fp16      # on a Jetson: also a TensorRT engine
    python probe.py --baseline
    python probe.py micro.tar --bundle --rounds 2 --time-budget 0.3   # many models, one process
"""

from __future__ import annotations

import argparse
import difflib
import glob
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

try:  # POSIX only; peak RSS is reported as null elsewhere
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None

PROBE_VERSION = 1
Z95 = 1.959964
MIN_TIME_FRACTION = 0.5  # of --time-budget, when --min-time is not given (see min_time)
_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(uint16)": "uint16",
    "tensor(int32)": "int32",
    "tensor(uint32)": "uint32",
    "tensor(int64)": "int64",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}
_THROTTLE_BITS = {
    0: "under_voltage_now",
    1: "freq_capped_now",
    2: "throttled_now",
    3: "soft_temp_limit_now",
    16: "under_voltage_occurred",
    17: "freq_capped_occurred",
    18: "throttled_occurred",
    19: "soft_temp_limit_occurred",
}


class ProbeError(Exception):
    """A failure reported to the caller as ``{"error": message}`` with exit code 1."""


class ProbeInputError(ProbeError):
    """A request the model or device cannot meet as asked; exit code 2, so the caller can call it bad input."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # bad arguments are answered in JSON too, exit code 2
        _emit({"error": "probe arguments: " + message})
        sys.exit(2)


def _emit(obj):
    sys.stdout.write(json.dumps(obj, allow_nan=False) + "\n")
    sys.stdout.flush()


# ----------------------------------------------------------------------------------------------- device state
def _read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read().replace("\x00", "").strip()
    except OSError:
        return None


def _run_tool(argv):
    """Output of a device tool (vcgencmd, nvpmodel) when it is on PATH, else None."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _cpu_model():
    text = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Model", "Hardware", "cpu model"):
        for line in text.splitlines():
            if line.split(":")[0].strip() == key and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _khz_to_mhz(text):
    return round(int(text) / 1000.0, 1) if text and text.isdigit() else None


def _temperatures():
    temps = {}
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        raw = _read(os.path.join(zone, "temp"))
        if raw and raw.lstrip("-").isdigit():
            name = _read(os.path.join(zone, "type")) or os.path.basename(zone)
            temps[name if name not in temps else os.path.basename(zone)] = round(int(raw) / 1000.0, 1)
    return temps or None


def _throttled():
    out = _run_tool(["vcgencmd", "get_throttled"])  # Raspberry Pi firmware: "throttled=0x50000"
    if not out or "=" not in out:
        return None
    raw = out.split("=", 1)[1].strip()
    try:
        value = int(raw, 16)
    except ValueError:
        return {"raw": raw}
    flags = {name: bool(value >> bit & 1) for bit, name in _THROTTLE_BITS.items()}
    flags["raw"] = raw
    return flags


def _nvpmodel():
    out = _run_tool(["nvpmodel", "-q"])  # Jetson: "NV Power Mode: MAXN\n0"
    if not out:
        return None
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    mode = {"raw": out}
    for line in lines:
        if "power mode" in line.lower() and ":" in line:
            mode["name"] = line.split(":", 1)[1].strip()
        elif line.isdigit():
            mode["id"] = int(line)
    return mode


def dynamic_state():
    """Frequency, temperature and throttling: read before and after timing to expose thermal drift."""
    cpufreq = "/sys/devices/system/cpu/cpu0/cpufreq"
    return {
        "freq_cur_mhz": _khz_to_mhz(_read(os.path.join(cpufreq, "scaling_cur_freq"))),
        "temperature_c": _temperatures(),
        "throttled": _throttled(),
    }


def device_info():
    """Static description of the machine plus its dynamic state at the start of the measurement."""
    cpufreq = "/sys/devices/system/cpu/cpu0/cpufreq"
    max_khz = _read(os.path.join(cpufreq, "cpuinfo_max_freq")) or _read(
        os.path.join(cpufreq, "scaling_max_freq")
    )
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    info = {
        "cpu": _cpu_model(),
        "board": _read("/proc/device-tree/model"),
        "logical_cores": os.cpu_count(),
        "usable_cores": affinity,
        "governor": _read(os.path.join(cpufreq, "scaling_governor")),
        "freq_max_mhz": _khz_to_mhz(max_khz),
        "nvpmodel": _nvpmodel(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    info.update(dynamic_state())
    return info


def peak_rss_mb():
    """Peak resident set size of this process in MiB, or None where neither source exists.

    Linux: ``VmHWM`` from /proc/self/status, NOT ``ru_maxrss``: the kernel carries ``ru_maxrss`` across
    fork+exec, so a probe started by a 2 GB training process would report at least 2 GB. ``VmHWM`` is the
    high-water mark of this process's own address space. Elsewhere: ``ru_maxrss`` (KiB; bytes on macOS).
    """
    status = _read("/proc/self/status") or ""
    for line in status.splitlines():
        if line.startswith("VmHWM:") and line.split()[1].isdigit():
            return round(int(line.split()[1]) / 1024.0, 2)
    if resource is None:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0, 2)


def _os_threads():
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


# ------------------------------------------------------------------------------------------------ statistics
def median_ci_rel(times):
    """Half-width of the distribution-free 95% CI of the median, relative to the median.

    Ranks ``n/2 -/+ z*sqrt(n)/2`` of the sorted sample (normal approximation to Binomial(n, 1/2)); latency
    distributions are skewed with outliers, so the median's CI is more honest than the mean's.
    """
    s = sorted(times)
    n = len(s)
    med = (s[(n - 1) // 2] + s[n // 2]) / 2.0
    half = Z95 * math.sqrt(n) / 2.0
    lo = s[max(1, int(math.floor(n / 2.0 - half))) - 1]
    hi = s[min(n, int(math.ceil(1 + n / 2.0 + half))) - 1]
    return max(med - lo, hi - med) / med if med > 0 else 0.0


def summarize(times, np):
    a = np.asarray(times, dtype=np.float64)
    p50, p90, p99 = (float(v) for v in np.percentile(a, [50, 90, 99]))
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    return {"p50": p50, "p90": p90, "p99": p99, "mean": float(a.mean()), "std": std, "min": float(a.min())}


# -------------------------------------------------------------------------------------------------- inputs
def _trained_shape(session):
    """``(input name, shape)`` from edgekd's ``input_name``/``input_shape`` metadata, else ``("", [])``."""
    meta = session.get_modelmeta().custom_metadata_map
    try:
        return meta.get("input_name", ""), list(json.loads(meta.get("input_shape", "[]")))
    except (ValueError, TypeError):
        return "", []


def _close(name, names):
    match = difflib.get_close_matches(name, names, n=1)
    return f"; did you mean '{match[0]}'?" if match else ""


def check_size_names(inputs, args):
    """Refuse a ``--shape`` input or ``--dim`` name the model does not have: a typo must not go unused."""
    names = [inp.name for inp in inputs]
    for name, _ in args.shape:
        if name not in names:
            raise ProbeInputError(
                f"--shape {name}=...: the model has no input '{name}'{_close(name, names)} "
                f"(inputs: {', '.join(names)})"
            )
    symbolic = sorted({d for inp in inputs for d in inp.shape if isinstance(d, str)})
    for name, _ in args.dim:
        if name not in symbolic:
            listed = ", ".join(symbolic) or "none; use --shape INPUT=SHAPE"
            raise ProbeInputError(
                f"--dim {name}=...: the model has no dynamic dimension '{name}'{_close(name, symbolic)} "
                f"(named dimensions: {listed})"
            )


def _given_shape(inp, shape, batch):
    """``--shape`` for one input, checked against its rank, its fixed sizes and ``--batch``."""
    text = "x".join(str(d) for d in shape)
    if len(shape) != len(inp.shape):
        raise ProbeInputError(
            f"--shape {inp.name}={text}: input '{inp.name}' has {len(inp.shape)} dimensions "
            f"{_declared(inp)}, not {len(shape)}"
        )
    for axis, dim in enumerate(inp.shape):  # same length, checked above (no zip(strict=) on Python 3.8)
        if isinstance(dim, int) and dim >= 0 and dim != shape[axis]:
            raise ProbeInputError(
                f"--shape {inp.name}={text}: axis {axis} of input '{inp.name}' {_declared(inp)} is fixed at {dim}"
            )
    if not (isinstance(inp.shape[0], int) and inp.shape[0] >= 0) and shape[0] != batch:
        raise ProbeInputError(
            f"--shape {inp.name}={text}: its batch (axis 0) is {shape[0]} but --batch is {batch}; "
            f"pass --batch {shape[0]} too (the profile records the batch)"
        )
    return list(shape)


def _declared(inp):
    return "[" + ", ".join("?" if d is None else str(d) for d in inp.shape) + "]"


def feed_shape(inp, args, recorded):
    """The shape fed to one input, and its dynamic axes that have no size: ``(shape, [(axis, dim), ...])``.

    Order: the input's ``--shape``; else per axis its fixed size, ``--dim NAME=SIZE``, ``--batch`` for a
    dynamic axis 0, the size edgekd's export recorded (``recorded``: ``(input name, shape)`` from the
    ``input_shape`` metadata; a segmentation export's H x W is dynamic, this is its training size). A
    missing axis is ``None`` in the shape; :func:`make_feed` refuses it rather than guess.
    """
    given = dict(args.shape)
    if inp.name in given:
        return _given_shape(inp, given[inp.name], args.batch), []
    dims = dict(args.dim)
    shape, missing = [], []
    for axis, dim in enumerate(inp.shape):
        if isinstance(dim, int) and dim >= 0:
            if axis == 0 and args.batch != 1 and dim != args.batch:
                raise ProbeError(
                    f"input '{inp.name}' has a fixed batch of {dim} but batch {args.batch} was asked; "
                    f"re-export with a dynamic batch axis or profile with batch {dim}"
                )
            shape.append(dim)
        elif isinstance(dim, str) and dim in dims:
            shape.append(dims[dim])
        elif axis == 0:
            shape.append(args.batch)
        elif inp.name == recorded[0] and axis < len(recorded[1]) and _is_size(recorded[1][axis]):
            shape.append(recorded[1][axis])
        else:
            shape.append(None)
            missing.append((axis, dim))
    return shape, missing


def _is_size(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def missing_size_message(model, inp, shape, missing):
    """One line naming the dynamic axes of ``inp`` without a size and the two ways to give them."""
    axes = ", ".join(f"{dim} (axis {axis})" if dim else f"axis {axis}" for axis, dim in missing)
    dims = " ".join(f"--dim {dim}=SIZE" for _, dim in missing if dim)
    example = "x".join("SIZE" if d is None else str(d) for d in shape)
    fixes = (
        f"{dims} or " if dims and all(dim for _, dim in missing) else ""
    ) + f"--shape {inp.name}={example}"
    return (
        f"{os.path.basename(model)}: input '{inp.name}' {_declared(inp)} has dynamic dimensions with no size: "
        f"{axes} (the model records no input size); pass {fixes}"
    )


def make_feed(session, args, np):
    """Random inputs of the shapes :func:`feed_shape` resolves, described as fed; refuses missing sizes.

    Returns ``(feed, described, defaulted)``; ``defaulted`` lists the axes set to ``--dim-default`` (only
    when it is given: without it a dynamic non-batch axis with no size is a :class:`ProbeInputError`).
    """
    rng = np.random.default_rng(0)
    inputs = session.get_inputs()
    check_size_names(inputs, args)
    recorded = _trained_shape(session)
    feed, described, defaulted = {}, [], []
    for inp in inputs:
        if inp.type not in _DTYPES:
            raise ProbeError(f"input '{inp.name}' has type {inp.type}, which the probe cannot generate")
        shape, missing = feed_shape(inp, args, recorded)
        if missing and args.dim_default is None:
            raise ProbeInputError(missing_size_message(args.model, inp, shape, missing))
        for axis, _ in missing:
            shape[axis] = args.dim_default
            defaulted.append(f"{inp.name}[{axis}]")
        dtype = np.dtype(_DTYPES[inp.type])
        if dtype.kind == "f":
            value = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            value = rng.integers(0, 2, size=shape).astype(bool)
        else:  # small non-negative integers keep index-like inputs (Gather, Embedding) in range
            value = rng.integers(0, 2, size=shape).astype(dtype)
        feed[inp.name] = value
        described.append({"name": inp.name, "shape": shape, "declared": list(inp.shape), "dtype": str(dtype)})
    return feed, described, defaulted


# ------------------------------------------------------------------------------------------------ measuring
def resolve_providers(ort, name):
    """The session's provider list for ``--provider NAME`` (default: CPU alone), refusing what this ORT lacks.

    ``NAME`` is a provider's full name or its short form in any case (``CUDAExecutionProvider``, ``cuda``).
    Why refuse rather than fall back: a CPU latency reported as the GPU's is worse than no number. CPU is
    listed last so nodes the chosen provider cannot run still run, as ORT itself would place them; TensorRT
    gets CUDA before CPU where the device has it, as ORT's documentation recommends, so the nodes TensorRT
    cannot take stay on the GPU.
    """
    cpu = "CPUExecutionProvider"
    if not name:
        return [cpu]
    suffix = "ExecutionProvider"
    known = {}
    for full in ort.get_all_providers():
        known[full.lower()] = full
        known[full[: -len(suffix)].lower() if full.endswith(suffix) else full.lower()] = full
    available = ort.get_available_providers()
    full = known.get(name.lower())
    if full is None:
        raise ProbeInputError(
            f"--provider {name}: not an onnxruntime execution provider{_close(name, ort.get_all_providers())} "
            f"(available on this device: {', '.join(available)})"
        )
    if full not in available:
        raise ProbeInputError(
            f"--provider {full}: not available in this device's onnxruntime {ort.__version__} "
            f"(available: {', '.join(available)})"
        )
    if full == cpu:
        return [cpu]
    cuda = "CUDAExecutionProvider"
    behind = [cuda] if full == "TensorrtExecutionProvider" and cuda in available else []
    return [full, *behind, cpu]


def open_session(ort, args, providers):
    """``(session, load_ms)``; refuses a session that silently dropped the provider that was asked for.

    ORT falls back to CPU with only a log line when e.g. CUDA's libraries are missing on the device; the
    probe would then time the CPU under the GPU's name.
    """
    t0 = time.perf_counter()
    try:
        session = ort.InferenceSession(args.model, session_options(ort, args.threads), providers=providers)
    except Exception as exc:
        raise ProbeError(f"onnxruntime could not load {args.model}: {_first_line(exc)}") from None
    load_ms = (time.perf_counter() - t0) * 1000.0
    used = session.get_providers()
    if providers[0] not in used:
        raise ProbeError(
            f"onnxruntime {ort.__version__} could not start {providers[0]} on this device and fell back to "
            f"{', '.join(used)}; check the libraries that provider needs (CUDA, cuDNN, TensorRT)"
        )
    return session, load_ms


def session_options(ort, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return so


def min_time(args):
    """Seconds the adaptive protocol measures before it may stop on the CI (never more than the budget).

    Why a floor in time: the median's CI of a sub-millisecond model reaches +-2% after a dozen runs, and a p99
    of a dozen samples is just the maximum. Measuring at least ``MIN_TIME_FRACTION`` of the budget gives tail
    percentiles hundreds of samples and averages over scheduler noise, while a slow model, which gets few runs
    in that time anyway, is still bounded by the budget.
    """
    floor = args.time_budget * MIN_TIME_FRACTION if args.min_time is None else args.min_time
    return min(floor, args.time_budget)


def time_runs(session, feed, args):
    """Timed inferences (ms) under the fixed-count or adaptive protocol, with the reason it stopped."""
    times = []
    if args.runs is not None:
        for _ in range(args.runs):
            t0 = time.perf_counter()
            session.run(None, feed)
            times.append((time.perf_counter() - t0) * 1000.0)
        return times, "fixed_runs"
    start = time.perf_counter()
    deadline = start + args.time_budget
    settled = start + min_time(args)
    next_check = args.min_runs
    while True:
        t0 = time.perf_counter()
        session.run(None, feed)
        now = time.perf_counter()
        times.append((now - t0) * 1000.0)
        n = len(times)
        if n >= args.max_runs:
            return times, "max_runs"
        if n < args.min_runs:
            continue
        if now >= deadline:
            return times, "time_budget"
        if now < settled:
            continue
        if n >= next_check:  # re-check every ~10% more runs: sorting each run would cost O(n^2 log n)
            if median_ci_rel(times) <= args.ci_target:
                return times, "ci_target"
            next_check = n + max(1, n // 10)


def op_profile(ort, feed, args, providers, runs=10):
    """Per-node kernel time from ORT's profiler, in a separate session so it cannot skew the timings."""
    tmp = tempfile.mkdtemp(prefix="edgekd-probe-")
    try:
        so = session_options(ort, args.threads)
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "ort")
        session = ort.InferenceSession(args.model, so, providers=providers)
        for _ in range(runs):
            session.run(None, feed)
        with open(session.end_profiling(), encoding="utf-8") as fh:
            events = json.load(fh)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    per_node, per_type = {}, {}
    for ev in events:
        if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        node = ev["name"][: -len("_kernel_time")]
        op_type = ev.get("args", {}).get("op_name", "?")
        ms = ev.get("dur", 0) / 1000.0 / runs
        per_node[(node, op_type)] = per_node.get((node, op_type), 0.0) + ms
        per_type[op_type] = per_type.get(op_type, 0.0) + ms
    total = sum(per_type.values()) or 1.0
    nodes = sorted(per_node.items(), key=lambda kv: -kv[1])[:10]
    return {
        "runs": runs,
        "top_nodes": [{"node": k[0], "op_type": k[1], "mean_ms": v, "share": v / total} for k, v in nodes],
        "by_op_type": [
            {"op_type": k, "mean_ms": v, "share": v / total}
            for k, v in sorted(per_type.items(), key=lambda kv: -kv[1])
        ],
    }


TRTEXEC_PATHS = ("/usr/src/tensorrt/bin/trtexec",)  # JetPack installs it here, off PATH
_TRT_STAT = re.compile(r"(min|max|mean|median|percentile\((\d+)%\))\s*=\s*([0-9.eE+-]+)\s*ms")


def parse_trtexec_times(text, label):
    """``{min, max, mean, median, p90, p99}`` (ms) from trtexec's ``<label>: min = .. ms, ...`` line, or None."""
    for line in text.splitlines():
        if label + ":" not in line:
            continue
        stats = {}
        for key, pct, value in _TRT_STAT.findall(line.split(label + ":", 1)[1]):
            stats["p" + pct if pct else key] = float(value)
        if "median" in stats:
            return stats
    return None


def tensorrt_profile(model, inputs, args):
    """Build and time a TensorRT engine with the device's ``trtexec`` (Jetson); None when there is none.

    Why trtexec: it is what NVIDIA ships on every JetPack, so timing the engine needs nothing installed.
    The engine build (minutes on a Jetson) is timed separately from inference, and the shapes are the ones
    the ORT measurement fed, so the two latencies describe the same work.
    """
    exe = shutil.which("trtexec") or next((p for p in TRTEXEC_PATHS if os.access(p, os.X_OK)), None)
    if exe is None:
        return None
    shapes = ",".join(f"{i['name']}:{'x'.join(str(d) for d in i['shape'])}" for i in inputs)
    shape_args = [f"--minShapes={shapes}", f"--optShapes={shapes}", f"--maxShapes={shapes}"]
    tmp = tempfile.mkdtemp(prefix="edgekd-trt-")
    try:
        engine = os.path.join(tmp, "model.plan")
        build = [exe, "--onnx=" + model, "--saveEngine=" + engine] + shape_args
        if args.tensorrt_fp16:
            build.append("--fp16")
        t0 = time.perf_counter()
        built = subprocess.run(build, capture_output=True, text=True, timeout=args.tensorrt_timeout)
        build_s = time.perf_counter() - t0
        if built.returncode != 0:
            return {"error": "trtexec could not build an engine: " + _last_line(built.stdout + built.stderr)}
        timed = subprocess.run(
            [exe, "--loadEngine=" + engine, "--shapes=" + shapes, "--warmUp=500", "--duration=3"],
            capture_output=True,
            text=True,
            timeout=args.tensorrt_timeout,
        )
        if timed.returncode != 0:
            return {"error": "trtexec could not run the engine: " + _last_line(timed.stdout + timed.stderr)}
        version = re.search(r"TensorRT version:\s*(\S+)", built.stdout)
        return {
            "version": version.group(1) if version else None,
            "precision": "fp16" if args.tensorrt_fp16 else "fp32",
            "build_s": build_s,
            "latency_ms": parse_trtexec_times(timed.stdout, "Latency"),
            "gpu_compute_ms": parse_trtexec_times(timed.stdout, "GPU Compute Time"),
        }
    except subprocess.TimeoutExpired:
        return {"error": f"trtexec timed out after {args.tensorrt_timeout:g}s"}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _last_line(text):
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


def measure(args, np, ort):
    """One measurement (see the module docstring), as the JSON-ready answer."""
    if not os.path.isfile(args.model):
        raise ProbeError(f"model file not found: {args.model}")
    providers = resolve_providers(ort, args.provider)
    device = device_info()
    threads_before = _os_threads()
    session, load_ms = open_session(ort, args, providers)
    threads_after = _os_threads()
    if args.threads > 0:
        intra = args.threads
    elif threads_before is not None and threads_after is not None:
        intra = threads_after - threads_before + 1  # ORT's pool spawns n-1 workers; the caller is the n-th
    else:
        intra = device["usable_cores"] or os.cpu_count()
    feed, inputs, defaulted = make_feed(session, args, np)
    try:
        t0 = time.perf_counter()
        session.run(None, feed)
        first = (time.perf_counter() - t0) * 1000.0
        for _ in range(args.warmup):
            session.run(None, feed)
        started = time.perf_counter()
        times, reason = time_runs(session, feed, args)
        elapsed = time.perf_counter() - started
    except Exception as exc:
        hint = ""
        if defaulted:
            dims = ", ".join(defaulted)
            hint = f" (dynamic dims {dims} were set to {args.dim_default}; pass --dim NAME=SIZE)"
        raise ProbeError(f"onnxruntime failed running {args.model}: {_first_line(exc)}{hint}") from None
    peak = peak_rss_mb()  # read before the optional profiling session can raise the peak
    latency = summarize(times, np)
    latency["first"] = first
    result = {
        "probe_version": PROBE_VERSION,
        "model": args.model,
        "latency_ms": latency,
        "load_ms": load_ms,
        "runs": len(times),
        "stop_reason": reason,
        "median_ci_rel": median_ci_rel(times),
        "min_time_s": None if args.runs is not None else min_time(args),
        "measure_s": elapsed,
        "peak_rss_mb": peak,
        "threads_requested": args.threads,
        "intra_op_threads": intra,
        "batch": args.batch,
        "warmup": args.warmup,
        "inputs": inputs,
        "onnxruntime": {
            "version": ort.__version__,
            "providers": session.get_providers(),  # what the session registered, CPU fallback included
            "requested": providers[0],
            "available": ort.get_available_providers(),
        },
        "device": device,
    }
    result["device"]["after"] = dynamic_state()
    if args.op_profile:
        try:
            result["op_profile"] = op_profile(ort, feed, args, providers)
        except Exception as exc:  # an optional extra: report it, keep the timings
            result["op_profile"] = {"error": _first_line(exc)}
    if args.tensorrt:
        result["tensorrt"] = tensorrt_profile(args.model, inputs, args)
    return result


def measure_bundle(args, np, ort):
    """``--bundle``: time every ``.onnx`` in the tar file ``args.model`` in this one process (edgekd.latency).

    Why: a latency calibration times hundreds of single-op micro-models (nn-Meter, MobiSys'21; NetAdapt,
    ECCV'18); one probe process, and over SSH one copy and one connection, carries them all. Each member gets
    its own session, the first run and ``--warmup`` runs untimed, then the same timing as a single model
    (:func:`time_runs`). ``--rounds`` repeats the whole list, round-robin, and keeps each member's lowest p50:
    background load only ever adds time, so the minimum over rounds is the least disturbed median.
    """
    import tarfile

    if not os.path.isfile(args.model) or not tarfile.is_tarfile(args.model):
        raise ProbeError(f"--bundle: {args.model} is not a tar file of .onnx models")
    providers = resolve_providers(ort, args.provider)
    with tarfile.open(args.model) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.name.endswith(".onnx")]
    device, started, results = device_info(), time.perf_counter(), {}
    for _ in range(args.rounds):
        for name, blob in members:
            session = ort.InferenceSession(blob, session_options(ort, args.threads), providers=providers)
            feed = make_feed(session, args, np)[0]
            for _ in range(args.warmup + 1):
                session.run(None, feed)
            times, reason = time_runs(session, feed, args)
            entry = results.setdefault(name, {"p50_rounds": [], "runs": 0})
            entry["p50_rounds"].append(summarize(times, np)["p50"])
            entry["runs"] += len(times)
            entry["stop_reason"] = reason
    for entry in results.values():
        entry["p50"] = min(entry["p50_rounds"])
    return {
        "probe_version": PROBE_VERSION,
        "bundle": True,
        "models": results,
        "threads_requested": args.threads,
        "batch": args.batch,
        "measure_s": time.perf_counter() - started,
        "onnxruntime": {"version": ort.__version__, "requested": providers[0]},
        "device": device,
    }


def _first_line(exc):
    """One line of an exception, without ORT's C++ source location and signature (noise to a user)."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return re.sub(r"\S*onnxruntime_src/\S+:\d+ [^()]*\([^()]*\) ", "", line)[:500]


def _dim(text):
    name, sep, size = text.rpartition("=")
    if not sep or not name or not size.isdigit() or int(size) < 1:
        raise argparse.ArgumentTypeError(f"expected NAME=SIZE with SIZE >= 1, e.g. height=224, got {text!r}")
    return name, int(size)


def _shape(text):
    name, sep, dims = text.rpartition("=")
    sizes = dims.lower().split("x")
    if not sep or not name or not all(d.isdigit() and int(d) >= 1 for d in sizes):
        raise argparse.ArgumentTypeError(
            f"expected INPUT=SHAPE with sizes >= 1 joined by x, e.g. input=1x3x224x224, got {text!r}"
        )
    return name, [int(d) for d in sizes]


def _positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def _non_negative(kind):
    def parse(text):
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
        return value

    return parse


def parse_args(argv=None):
    p = _Parser(description="Time one ONNX model with ONNX Runtime; prints one JSON object.")
    p.add_argument("model", nargs="?", help="path to the .onnx file")
    p.add_argument("--baseline", action="store_true", help="only report the bare interpreter's peak RSS")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads; 0 = ORT default (all cores)")
    p.add_argument("--batch", type=_positive(int), default=1, help="size of a dynamic dim 0")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs after the first inference")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--runs", type=_positive(int), help="exactly this many timed runs")
    mode.add_argument("--time-budget", type=_positive(float), default=3.0, help="seconds for adaptive runs")
    p.add_argument("--min-runs", type=_positive(int), default=10, help="adaptive floor, wins over the budget")
    p.add_argument(
        "--min-time",
        type=_non_negative(float),
        default=None,
        help="adaptive: seconds measured before the CI may stop it (default: half the budget; capped by it)",
    )
    p.add_argument("--max-runs", type=_positive(int), default=10000, help="adaptive ceiling")
    p.add_argument("--ci-target", type=_positive(float), default=0.02, help="relative 95%% CI half-width")
    p.add_argument("--dim", type=_dim, action="append", default=[], help="NAME=SIZE for a named dynamic dim")
    p.add_argument(
        "--shape", type=_shape, action="append", default=[], help="INPUT=1x3x224x224: one input's whole shape"
    )
    p.add_argument(
        "--dim-default",
        type=_positive(int),
        default=None,
        help="size of dynamic non-batch dims left without one (default: refuse them)",
    )
    p.add_argument(
        "--provider", help="ONNX Runtime execution provider, e.g. CUDAExecutionProvider (default CPU)"
    )
    p.add_argument("--bundle", action="store_true", help="MODEL is a tar of .onnx files: time each")
    p.add_argument("--rounds", type=_positive(int), default=1, help="--bundle: passes over the models")
    p.add_argument("--op-profile", action="store_true", help="add per-node times from a separate session")
    p.add_argument("--tensorrt", action="store_true", help="also build and time a TensorRT engine (trtexec)")
    p.add_argument("--tensorrt-fp16", action="store_true", help="build the TensorRT engine with --fp16")
    p.add_argument(
        "--tensorrt-timeout", type=_positive(float), default=1800.0, help="seconds per trtexec call"
    )
    args = p.parse_args(argv)
    if not args.baseline and not args.model:
        p.error("a model path is required unless --baseline is given")
    if args.threads < 0 or args.warmup < 0:
        p.error("--threads and --warmup must be >= 0")
    if args.min_runs > args.max_runs:
        p.error("--min-runs must be <= --max-runs")
    return args


def main(argv=None):
    args = parse_args(argv)
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [
        d for d in sys.path if os.path.abspath(d or ".") != here
    ]  # siblings must not shadow imports
    try:  # imported in both modes, so the baseline holds exactly what a measurement holds before its session
        import numpy as np
        import onnxruntime as ort
    except ImportError as exc:
        _emit({"error": f"probe needs numpy and onnxruntime: {_first_line(exc)}"})
        return 1
    if args.baseline:
        _emit(
            {
                "probe_version": PROBE_VERSION,
                "baseline": True,
                "peak_rss_mb": peak_rss_mb(),
                "onnxruntime": {"version": ort.__version__},
                "device": device_info(),
            }
        )
        return 0
    try:
        result = (measure_bundle if args.bundle else measure)(args, np, ort)
    except ProbeError as exc:
        _emit({"error": str(exc)})
        return 2 if isinstance(exc, ProbeInputError) else 1
    except Exception as exc:  # anything else ORT/numpy raise still answers in JSON
        _emit({"error": f"{type(exc).__name__}: {_first_line(exc)}"})
        return 1
    _emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
