"""``--resume``: which stages of a killed run are finished, and whether their outputs can be trusted.

Why hashes of inputs rather than "the file exists": a finished stage is only reusable if it would produce the
same output again. Each stage therefore leaves a marker, ``state/<stage>.done.json``, written *after* its
outputs, holding

* ``inputs`` — the sha256 of everything the stage's output depends on: the recipe sections it reads, the
  hash of the upstream stage's inputs (so a change anywhere upstream invalidates everything downstream) and
  the sha256 of the upstream files it reads (the teacher checkpoint, ``state/pruned.pt``, ``student.pt``);
* ``outputs`` — the sha256 of every file it wrote (a file changed or deleted since makes the stage rerun);
* ``result`` — the stage's result dataclasses as JSON (``edgekd.results.to_dict``), so a skipped stage
  still hands the next one what it would have returned.

Training inside a stage resumes from its per-epoch checkpoint (``state/<stage>-last.pt``) only when the
checkpoint was started with the same inputs: ``state/<stage>.started.json`` records them before the first
epoch.

A resume with a changed recipe is refused with the differing keys, unless forced; a forced resume reruns
exactly the stages whose inputs changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edgekd import __version__
from edgekd.errors import InputError
from edgekd.io import read_json, sha256_file, write_json
from edgekd.models.checkpoint import load_checkpoint
from edgekd.recipe.schema import PERMISSIONS
from edgekd.rundir import FINAL_NAMES, RunDir

log = logging.getLogger("edgekd")

STATE_VERSION = 2  # 2: markers hold each stage's result dataclass (edgekd.context's stage contract)


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": [1, {"c": 2}]}}`` → ``{"a.b.0": 1, "a.b.1.c": 2}`` (the ``--set`` key syntax)."""
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(data, list) and data:
        out = {}
        for index, value in enumerate(data):
            out.update(flatten(value, f"{prefix}{index}."))
        return out
    return {prefix.rstrip("."): data}


def recipe_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two resolved recipes (permission keys excluded), sorted."""
    a, b = flatten(old), flatten(new)
    keys = sorted(k for k in set(a) | set(b) if a.get(k, _ABSENT) != b.get(k, _ABSENT))
    return [k for k in keys if k not in PERMISSIONS]


def hash_inputs(inputs: dict[str, Any]) -> str:
    """sha256 of canonical JSON of ``inputs`` (sorted keys), with edgekd's version and the state format."""
    payload = {"edgekd": __version__, "state_version": STATE_VERSION, **inputs}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class StageMarker:
    """What a finished stage left in ``state/<stage>.done.json``."""

    stage: str
    inputs: str
    outputs: dict[str, str]  # path relative to the run directory -> sha256
    seconds: float
    result: Any


class RunState:
    """The ``state/`` directory of one run directory: stage markers, training checkpoints, cleanup."""

    def __init__(self, run: RunDir) -> None:
        self.run = run

    def has_previous_run(self) -> bool:
        return self.run.recipe.is_file()

    def check_recipe(self, recipe: dict[str, Any], force: bool) -> None:
        """Refuse to resume a run that was started with a different resolved recipe (unless ``force``).

        Raises:
            InputError: the recipes differ (the message lists the keys) or ``recipe.yaml`` is unreadable.
        """
        try:
            previous = yaml.safe_load(self.run.recipe.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            if force:
                log.warning(
                    "%s is unreadable (%s); --force: resuming on stage hashes alone", self.run.recipe, exc
                )
                return
            raise InputError(
                f"{self.run.recipe}: cannot read the recipe of the run to resume ({type(exc).__name__}); "
                "add --force to resume on stage hashes alone, or drop --resume to start over"
            ) from None
        changed = recipe_diff(previous if isinstance(previous, dict) else {}, recipe)
        if not changed:
            return
        shown = ", ".join(changed[:8]) + (f" (+{len(changed) - 8} more)" if len(changed) > 8 else "")
        if force:
            log.warning("--force: resuming with a changed recipe (%s); stages they affect rerun", shown)
            return
        raise InputError(
            f"{self.run.root}: cannot resume: the recipe differs from the one this run started with ({shown}); "
            "use the original recipe, add --force to rerun only the stages those keys affect, "
            "or drop --resume to start over"
        )

    def start_fresh(self) -> None:
        """Forget a previous run in this directory: its state, and (if it was a run) its final artifacts.

        Only when ``recipe.yaml`` says the directory holds an edgekd run: ``--out .`` on a directory of one's
        own files must not delete a ``student.pt`` or ``state/`` that edgekd never wrote. (Without it, stale
        markers are harmless: a marker is reused only for identical inputs and unchanged outputs.)
        """
        if not self.has_previous_run():
            return
        shutil.rmtree(self.run.state, ignore_errors=True)
        self.run.state.mkdir(parents=True, exist_ok=True)
        for name in FINAL_NAMES:
            self.run.file(name).unlink(missing_ok=True)
        for plot in self.run.plots.glob("*.png"):
            plot.unlink()

    def load(self, stage: str, inputs: str) -> StageMarker | None:
        """The stage's marker if it is reusable: same inputs, every output present and unchanged."""
        path = self.run.marker(stage)
        if not path.is_file():
            return None
        try:
            data = read_json(path)
            marker = StageMarker(**data)
        except (InputError, TypeError) as exc:
            log.warning("%s: unreadable stage marker (%s); rerunning %s", path, exc, stage)
            return None
        if marker.inputs != inputs:
            log.info("%s: inputs changed since it ran; rerunning it", stage)
            return None
        for name, digest in marker.outputs.items():
            file = self.run.root / name
            if not file.is_file() or sha256_file(file) != digest:
                log.warning(
                    "%s: %s is missing or changed since the stage finished; rerunning it", stage, name
                )
                return None
        return marker

    def invalidate(self, stage: str) -> None:
        """Drop a stage's marker before it reruns (its outputs are about to be replaced)."""
        self.run.marker(stage).unlink(missing_ok=True)

    def forget(self, stage: str) -> None:
        """Drop the marker and the record of what the epoch checkpoint was started with.

        For single-stage commands that write the same files outside ``compress`` (``edgekd distill`` rewrites
        ``student.pt`` and ``state/distill-last.pt``): a later ``compress --resume`` then never mistakes them
        for its own.
        """
        self.invalidate(stage)
        self.run.started(stage).unlink(missing_ok=True)

    def finish(
        self, stage: str, inputs: str, outputs: list[Path], seconds: float, result: Any
    ) -> StageMarker:
        """Record a finished stage; call it only once every output is written (atomically) under its name."""
        marker = StageMarker(
            stage=stage,
            inputs=inputs,
            outputs={p.relative_to(self.run.root).as_posix(): sha256_file(p) for p in outputs},
            seconds=round(seconds, 3),
            result=result,
        )
        write_json(self.run.marker(stage), marker.__dict__)
        return marker

    def training_checkpoint(self, stage: str, inputs: str, resume: bool) -> tuple[Path, bool]:
        """The stage's epoch checkpoint path and whether training should resume from it.

        Resumes only when ``resume`` is set, the checkpoint was started with the same ``inputs`` and it loads
        (``weights_only``). Otherwise the checkpoint is removed and the start is recorded, so a later
        ``--resume`` can tell whether the checkpoint belongs to the stage it is about to rerun.
        """
        checkpoint, started = self.run.checkpoint(stage), self.run.started(stage)
        if resume and checkpoint.is_file() and started.is_file():
            try:
                record = read_json(started)
                if isinstance(record, dict) and record.get("inputs") == inputs:
                    load_checkpoint(checkpoint)  # refuses pickled code; raises on a corrupt file
                    return checkpoint, True
                log.info("%s: the epoch checkpoint is from other inputs; training from the start", stage)
            except InputError as exc:
                log.warning("%s: ignoring the epoch checkpoint (%s); training from the start", stage, exc)
        checkpoint.unlink(missing_ok=True)
        write_json(started, {"stage": stage, "inputs": inputs})
        return checkpoint, False


_ABSENT = object()
