"""The profile stage: every exported ONNX file timed on every target of ``recipe.profile``.

The measurement itself runs in a fresh process per setting (:mod:`edgekd.profile.probe`), locally or on a
device over SSH; this stage only decides what is timed and attaches the profiles to the artifacts.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from edgekd.context import RunContext, Stage, Upstream, section
from edgekd.profile.measure import profile_files
from edgekd.results import Artifact, ExportResult, ProfileResult


def run(ctx: RunContext, upstream: Upstream) -> ProfileResult:
    """The exported artifacts, each ONNX file with its profiles (``student.pt`` is not timed)."""
    exported = upstream.get(ExportResult).artifacts
    profiles = profile_files({a.name: ctx.run.file(a.path) for a in _timed(exported)}, ctx.recipe.profile)
    return ProfileResult(
        tuple(dataclasses.replace(a, profiles=tuple(profiles.get(a.name, ()))) for a in exported)
    )


def inputs(ctx: RunContext, upstream: Upstream) -> dict[str, Any]:
    """What is timed (a re-exported file is profiled again) and how."""
    timed = _timed(upstream.get(ExportResult).artifacts)
    return {"artifacts": {a.name: a.sha256 for a in timed}, "profile": section(ctx.recipe, "profile")}


def _timed(artifacts: tuple[Artifact, ...]) -> list[Artifact]:
    return [a for a in artifacts if a.format == "onnx"]


STAGE = Stage(name="profile", result=ProfileResult, run=run, inputs=inputs)
