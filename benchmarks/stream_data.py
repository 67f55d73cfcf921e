"""Benchmark (issue 17): streamed image folders — edgekd's memory through a real-size run, and loader speed.

    nice -n 10 .venv/bin/python benchmarks/stream_data.py [--root runs/bench/stream_data/folder] [--images 20000]
        [--size 224] [--classes 4] [--workers 2] [--model NAME] [--train-limit N] [--stream auto|true] [--batch 64]
        [--small 2000] [--rounds 3] [--skip-compress] [--skip-speed]

1. **A folder of photos.** Generates (once; reused while its ``MANIFEST.json`` matches the arguments)
   ``ROOT/train/<class>/*.jpg`` (``--images``) and ``ROOT/val/<class>/*.jpg`` (one twentieth as many): 224²
   JPEGs of smooth coloured noise with a few filled shapes whose colour and kind depend on the class.
2. **Memory through ``edgekd compress``.** Runs the real CLI in a child process on that folder (teacher
   ``--model`` at 224², random init: by default :func:`tiny_cnn`, a 4-conv network cheap enough for a full KD
   epoch over 20k images on 2 cores; ``torchvision:mobilenet_v3_small`` with ``--train-limit`` for a realistic
   model's memory. ``data.args.stream: --stream`` (auto streams the full folder; a capped one needs ``true``);
   ``data.preprocessing: measured``, so the bounded measurement runs too; prune 50% MACs; one KD epoch; export
   and a short profile). Every 0.5 s it reads ``/proc``: the RSS of the edgekd process, and the PSS of its
   whole process tree (edgekd + DataLoader workers; PSS charges each shared page once, so the sum is what the
   run costs the machine). Goal: peak < 3 GB.
3. **Loader speed.** On ``--small`` training images: images/s of one epoch, augmented and not, through the
   in-memory loader (after decoding everything up front, timed separately) and through the streamed loader
   (``--workers`` workers, and in-process), batch 64, in this process; median of ``--rounds`` alternating
   rounds.

Prints a Markdown block for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import resource
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from multiprocessing import Pool
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from torch import nn  # noqa: E402

from edgekd.data import build_data  # noqa: E402
from edgekd.recipe.schema import DataConfig  # noqa: E402

GIB = 2**30
TINY_CNN = "benchmarks.stream_data:tiny_cnn"
CLASS_HUES = ((220, 60, 50), (60, 170, 80), (50, 90, 210), (200, 170, 40), (150, 60, 180), (40, 170, 180))


@dataclass(frozen=True)
class Folder:
    """What to generate: where, how many training images, their size and the number of classes."""

    root: Path
    images: int
    size: int
    classes: int

    def manifest(self) -> dict:
        return {"images": self.images, "eval": self.images // 20, "size": self.size, "classes": self.classes}


def _draw(job: tuple[str, int, int, int, int]) -> None:
    """Write one JPEG: class-tinted low-frequency noise plus 3–6 shapes of the class's colour and kind."""
    import numpy as np
    from PIL import Image, ImageDraw

    path, label, size, seed, classes = job
    rng = np.random.default_rng(seed)
    hue = np.array(CLASS_HUES[label % len(CLASS_HUES)], dtype=np.float64)
    coarse = rng.uniform(0, 255, (8, 8, 3)).astype(np.uint8)
    background = np.asarray(
        Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), np.float64
    )
    pixels = (0.6 * background + 0.4 * hue + rng.normal(0, 12, (size, size, 3))).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(pixels)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 7))):
        x0, y0 = (int(v) for v in rng.integers(0, size - 40, 2))
        w, h = (int(v) for v in rng.integers(20, size // 2, 2))
        colour = tuple(int(c) for c in (hue * rng.uniform(0.5, 1.0)).clip(0, 255))
        box = (x0, y0, min(size - 1, x0 + w), min(size - 1, y0 + h))
        (draw.ellipse if label % 2 else draw.rectangle)(box, fill=colour)
    img.save(path, quality=85)


def generate(folder: Folder, workers: int) -> float:
    """Write the folder unless its manifest already matches; returns the seconds spent (0 when reused)."""
    manifest = folder.root / "MANIFEST.json"
    if manifest.is_file() and json.loads(manifest.read_text()) == folder.manifest():
        return 0.0
    started = time.perf_counter()
    jobs = []
    for split, count in (("train", folder.images), ("val", folder.images // 20)):
        for label in range(folder.classes):
            directory = folder.root / split / f"class_{label}"
            directory.mkdir(parents=True, exist_ok=True)
            for i in range(label, count, folder.classes):
                seed = i * 31 + label + (0 if split == "train" else 10**7)
                jobs.append((str(directory / f"{i:06d}.jpg"), label, folder.size, seed, folder.classes))
    with Pool(max(1, workers)) as pool:
        for _ in pool.imap_unordered(_draw, jobs, chunksize=64):
            pass
    manifest.write_text(json.dumps(folder.manifest()))
    return time.perf_counter() - started


def tiny_cnn(num_classes: int = 4, in_channels: int = 3) -> nn.Module:
    """A 4-conv classifier for 224² inputs (~10 MMAC): a patchify stem (4×4, stride 4), three stride-2 convs.

    Why: the benchmark measures the data path's memory; a model this cheap lets one KD epoch cover all 20k
    images on 2 shared cores (``edgekd`` builds it as ``benchmarks.stream_data:tiny_cnn``).
    """
    layers: list[nn.Module] = []
    widths = (in_channels, 16, 32, 64, 96)
    for i, (cin, cout) in enumerate(zip(widths, widths[1:], strict=False)):
        kernel, stride, pad = (4, 4, 0) if i == 0 else (3, 2, 1)
        layers += [nn.Conv2d(cin, cout, kernel, stride, pad, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], num_classes))


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, from ``/proc/*/stat`` parent links."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += parents.get(current, [])
    return found


def _memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB, from ``/proc/PID/smaps_rollup``; zeros once it is gone."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


class MemoryWatch:
    """Samples a child process tree every ``interval`` seconds: RSS of the child, PSS of the tree (KiB)."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid, self.interval = pid, interval
        self.main_rss = self.tree_pss = self.most_processes = 0
        self.samples: list[tuple[float, int, int]] = []  # (time.time(), RSS of the child, PSS of the tree)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            tree = _descendants(self.pid)
            sizes = [_memory_kib(p) for p in tree]
            self.samples.append((time.time(), sizes[0][0], sum(pss for _, pss in sizes)))
            self.main_rss = max(self.main_rss, sizes[0][0])
            self.tree_pss = max(self.tree_pss, sum(pss for _, pss in sizes))
            self.most_processes = max(self.most_processes, sum(1 for rss, _ in sizes if rss))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def peaks_by_stage(samples: list[tuple[float, int, int]], log_text: str) -> dict[str, tuple[float, float]]:
    """``{stage: (peak RSS, peak PSS)}`` in GiB, the samples assigned to stages by edgekd.log's ``── stage`` lines."""
    starts = [
        (datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp(), m[2])
        for m in re.finditer(r"^(\S+ \S+) INFO edgekd: ── (\w+)", log_text, re.M)
    ]
    peaks: dict[str, tuple[float, float]] = {}
    for when, rss, pss in samples:
        stage = next((name for start, name in reversed(starts) if start <= when), None)
        if stage is not None:
            old = peaks.get(stage, (0.0, 0.0))
            peaks[stage] = (max(old[0], rss / 2**20), max(old[1], pss / 2**20))
    return peaks


@dataclass(frozen=True)
class Case:
    """One ``edgekd compress`` run: the teacher, the KD epoch's cap and ``data.args.stream``."""

    model: str
    train_limit: int | None
    stream: str
    workers: int
    batch: int


def compress_recipe(folder: Folder, case: Case) -> dict:
    """The recipe the benchmark runs: the generated folder, ``case``'s teacher, prune + one KD epoch."""
    data = {
        "name": "image_folder",
        "root": str(folder.root),
        "args": {"size": [folder.size, folder.size], "stream": True if case.stream == "true" else "auto"},
        "workers": case.workers,
        "batch_size": case.batch,
        "eval_batch_size": 64,
        "val": 0.05,
        "preprocessing": "measured",
    }
    if case.train_limit:
        data["train_limit"] = case.train_limit
    return {
        "task": "classification",
        "data": data,
        "teacher": {"model": {"name": case.model}},
        "prune": {"reduction": 0.5, "iterative_steps": 1},
        "distill": {"epochs": 1, "lr": 0.01},
        "profile": {"threads": [1], "runs": 20, "warmup": 2},
        "export": {"parity_samples": 64},
    }


def run_compress(folder: Folder, out: Path, case: Case) -> dict:
    """Run ``edgekd compress`` in a child process, watching its memory; the numbers and the exit status."""
    out.mkdir(parents=True, exist_ok=True)
    recipe = out / "recipe.yaml"  # JSON is YAML
    recipe.write_text(json.dumps(compress_recipe(folder, case), indent=1))
    command = [sys.executable, "-m", "edgekd", "compress", str(recipe), "--out", str(out / "run")]
    started = time.perf_counter()
    with open(out / "compress.log", "w") as log:
        child = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        watch = MemoryWatch(child.pid)
        code = child.wait()
        watch.stop()
    report = out / "run" / "report.json"
    stages = json.loads(report.read_text())["stages"] if report.is_file() else {}
    logged = (out / "run" / "edgekd.log").read_text() if (out / "run" / "edgekd.log").is_file() else ""
    return {
        "data_line": next(
            (line.split(": ", 1)[1] for line in logged.splitlines() if "as uint8" in line), "?"
        ),
        "exit": code,
        "seconds": time.perf_counter() - started,
        "main_rss_gib": watch.main_rss / 2**20,
        "tree_pss_gib": watch.tree_pss / 2**20,
        "largest_gib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20,
        "processes": watch.most_processes,
        "stages": {k: round(v.get("seconds", 0.0), 1) for k, v in stages.items()},
        "peaks": peaks_by_stage(watch.samples, logged),
        "command": " ".join(command[1:]),
    }


def loader_speed(folder: Folder, small: int, workers: int, rounds: int) -> dict[str, dict[bool, float]]:
    """Median images/s over ``rounds`` of one epoch of ``small`` images per loader, augmented and not.

    The loaders take turns within each round, so load from other processes on the shared machine hits them
    alike. The in-memory set's up-front decode is timed apart (imports warmed up first).
    """
    logging.getLogger("edgekd").setLevel(logging.WARNING)

    def config(stream: bool, n_workers: int, limit: int = small) -> DataConfig:
        args = {"size": [folder.size, folder.size], "stream": stream}
        return DataConfig(
            name="image_folder", root=folder.root, args=args, train_limit=limit, eval_limit=64, val=0,
            workers=n_workers, preprocessing="imagenet",
        )  # fmt: skip

    build_data(config(False, 0, limit=8))  # imports and file listing, outside the timed decode
    started = time.perf_counter()
    loaders = {"memory": build_data(config(False, 0))}
    decode = time.perf_counter() - started
    loaders |= {"stream": build_data(config(True, workers)), "stream0": build_data(config(True, 0))}
    samples: dict[tuple[str, bool], list[float]] = {(k, a): [] for k in loaders for a in (True, False)}
    for _ in range(rounds):
        for (name, augment), values in samples.items():
            started, seen = time.perf_counter(), 0
            for images, _ in loaders[name].train_loader(64, augment=augment, seed=0):
                seen += len(images)
            values.append(seen / (time.perf_counter() - started))
    speed = {name: {a: statistics.median(samples[(name, a)]) for a in (True, False)} for name in loaders}
    return {**speed, "decode_s": {True: decode, False: decode}}


def markdown(args: argparse.Namespace, folder: Folder, made: float, run: dict | None, speed: dict) -> str:
    """The RESULTS.md block."""
    info = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "?")
    made_text = f"generated in {made:.0f} s" if made else "reused"
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    lines = [
        f"Machine: {cpu}, {os.cpu_count()} cores (load average {load} at the end, shared with other jobs).",
        f"Folder: {folder.images} training + {folder.images // 20} eval JPEGs at {folder.size}², "
        f"{folder.classes} classes ({made_text}; {_du(folder.root)}).",
        "",
    ]
    if run is not None:
        lines += [
            f"`edgekd compress` ({run['command']}): exit {run['exit']}, {run['seconds']:.0f} s; stages (s): "
            f"{', '.join(f'{k} {v}' for k, v in run['stages'].items())}. Its data line: `{run['data_line']}`.",
            "",
            "| peak memory | GiB |",
            "|---|---|",
            f"| RSS of the edgekd process | {run['main_rss_gib']:.2f} |",
            f"| PSS of edgekd + its DataLoader workers ({run['processes']} processes at most) | "
            f"{run['tree_pss_gib']:.2f} |",
            f"| largest single process (ru_maxrss) | {run['largest_gib']:.2f} |",
            "",
            "| stage | peak RSS, edgekd (GiB) | peak PSS, with workers (GiB) |",
            "|---|---|---|",
            *(f"| {stage} | {rss:.2f} | {pss:.2f} |" for stage, (rss, pss) in run["peaks"].items()),
            "",
        ]
    if speed:
        lines += _speed_table(args, folder, speed)
    return "\n".join(lines)


def _speed_table(args: argparse.Namespace, folder: Folder, speed: dict) -> list[str]:
    def row(label: str, key: str) -> str:
        return f"| {label} | {speed[key][True]:.0f} | {speed[key][False]:.0f} |"

    return [
        f"Loader speed, one epoch of {args.small} images at {folder.size}², batch 64, images/s (median of "
        f"{args.rounds} alternating rounds):",
        "",
        "| loader | augmented (training) | not augmented |",
        "|---|---|---|",
        row(f"in memory (after decoding all up front in {speed['decode_s'][True]:.1f} s)", "memory"),
        row(f"streamed, {args.workers} DataLoader workers", "stream"),
        row("streamed, in-process (data.workers: 0)", "stream0"),
    ]


def _du(path: Path) -> str:
    total = sum(p.stat().st_size for p in path.rglob("*.jpg"))
    return f"{total / GIB:.2f} GiB on disk" if total >= GIB else f"{total / 2**20:.0f} MiB on disk"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=REPO / "runs" / "bench" / "stream_data" / "folder")
    parser.add_argument("--images", type=int, default=20000, help="training images (eval: one twentieth)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="data.workers (DataLoader worker processes)")
    parser.add_argument("--model", default=TINY_CNN, help="teacher.model.name of the compress run")
    parser.add_argument("--train-limit", type=int, default=None, help="cap the KD epoch (data.train_limit)")
    parser.add_argument("--stream", choices=("auto", "true"), default="auto", help="data.args.stream")
    parser.add_argument("--batch", type=int, default=64, help="data.batch_size of the compress run")
    parser.add_argument("--small", type=int, default=2000, help="images in the loader-speed comparison")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the loader-speed epochs")
    parser.add_argument("--skip-compress", action="store_true", help="only generate and time the loaders")
    parser.add_argument("--skip-speed", action="store_true", help="skip the loader-speed comparison")
    args = parser.parse_args()
    folder = Folder(args.root.resolve(), args.images, args.size, args.classes)
    made = generate(folder, os.cpu_count() or 1)
    print(f"folder ready ({made:.0f} s)", file=sys.stderr)
    run = None
    if not args.skip_compress:
        case = Case(args.model, args.train_limit, args.stream, args.workers, args.batch)
        run = run_compress(folder, folder.root.parent / "compress", case)
        print(f"compress: {run}", file=sys.stderr)
    speed = {} if args.skip_speed else loader_speed(folder, args.small, args.workers, args.rounds)
    print(markdown(args, folder, made, run, speed))


if __name__ == "__main__":
    main()
