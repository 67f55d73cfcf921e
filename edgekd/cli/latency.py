"""``edgekd calibrate`` and ``edgekd predict``: build a target's latency model, and predict from it."""

from __future__ import annotations

from pathlib import Path

import click

from edgekd.cli import cli
from edgekd.cli.options import JSON_OPT, SET_OPT, emit, existing_file, load
from edgekd.cli.policy import command
from edgekd.errors import InputError

TARGET_OPT = click.option(
    "--target",
    default="local",
    show_default=True,
    help="Where to measure: local, ssh://user@host[:port], or a name from targets.yaml ($EDGEKD_TARGETS).",
)
THREADS_OPT = click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Intra-op threads the model will run with (part of the latency model's key).",
)
BATCH_OPT = click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
CACHE_OPT = click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    help="Latency model cache (default: $EDGEKD_LATENCY_CACHE, else ~/.cache/edgekd/latency).",
)


@cli.command(short_help="Build a device's latency model for a model.")
@click.argument("source", type=click.Path(path_type=Path), callback=existing_file)
@TARGET_OPT
@THREADS_OPT
@BATCH_OPT
@click.option(
    "--quick", is_flag=True, help="Coarser width grid, one round, fewer whole models (minutes → seconds)."
)
@click.option(
    "--holdout",
    type=click.IntRange(min=0),
    default=6,
    show_default=True,
    help="Randomly pruned variants measured for the held-out error (recipes only; not used in fitting).",
)
@CACHE_OPT
@SET_OPT
@JSON_OPT
@command
def calibrate(
    source: Path,
    target: str,
    threads: int,
    batch: int,
    quick: bool,
    holdout: int,
    cache_dir: Path | None,
    overrides: tuple[str, ...],
    as_json: bool,
) -> None:
    """Time what pruning can produce for SOURCE on a target, fit a latency model and cache it.

    SOURCE is a recipe (its teacher, at its data's input size) or an ONNX file. Every prunable Conv/Gemm,
    fused as ONNX Runtime runs it, is timed as a single-op model across the widths pruning may give it
    (multiples of 8 and odd ones), all in one probe run on the target (one SSH connection for a device);
    whole models at a few uniform widths fit what the layers leave out. For a recipe, randomly pruned
    variants measure the held-out error (within_10pct, mape); an ONNX file gets no held-out error. The
    model is cached per device, onnxruntime version, threads, batch and architecture, so `edgekd predict`
    and every report find it for any student pruned from the same model.
    """
    from edgekd.latency.calibrate import CalibrationConfig, calibrate_onnx, calibrate_torch

    cfg = CalibrationConfig(
        threads=threads,
        batch=batch,
        quick=quick,
        holdout=holdout,
        cache=str(cache_dir) if cache_dir else None,
    )
    suffix = source.suffix.lower()
    if suffix == ".onnx":
        from edgekd.onnxfile import check_onnx_file

        result = calibrate_onnx(check_onnx_file(source), target, cfg)
    elif suffix in (".yaml", ".yml"):
        result = _calibrate_recipe(source, overrides, target, cfg, calibrate_torch)
    else:
        raise InputError(f"{source}: expected a recipe (.yaml) or an ONNX file (.onnx)")
    entry = {**result.stage_entry(), "cache_file": str(result.path), "q": result.model.q}

    def human() -> None:
        err = entry["error"]
        held = (
            f"held-out: {err['within_10pct']:.0%} within ±10%, MAPE {err['mape']:.1%}"
            if err["within_10pct"] is not None
            else "no held-out error (an ONNX file has no pruned variants)"
        )
        click.echo(f"latency model for {source.name} on {target} ({threads} thread(s)): {held}")
        click.echo(f"  {result.samples} models timed in {result.seconds:.1f} s → {result.path}")

    emit(entry, as_json, human)


def _calibrate_recipe(source, overrides, target, cfg, calibrate_torch):  # noqa: ANN001, ANN202
    """The recipe's teacher at its data's input size (the data is loaded for one real example input)."""
    import tempfile

    from edgekd.run.prepare import prepare
    from edgekd.rundir import RunDir

    recipe = load(source, overrides)
    with tempfile.TemporaryDirectory(prefix="edgekd-calibrate-") as tmp:
        ctx = prepare(recipe, RunDir(Path(tmp)))
        example = ctx.data.example_input(cfg.batch)
    return calibrate_torch(ctx.teacher, example, target, cfg)


@cli.command(short_help="Predict an ONNX file's latency on a device.")
@click.argument("model", type=click.Path(path_type=Path), callback=existing_file)
@TARGET_OPT
@THREADS_OPT
@BATCH_OPT
@CACHE_OPT
@JSON_OPT
@command
def predict(
    model: Path, target: str, threads: int, batch: int, cache_dir: Path | None, as_json: bool
) -> None:
    """Predict the p50 latency of MODEL.onnx on a target from its cached latency model (no timing).

    Any model of a calibrated architecture is covered: a student pruned from a calibrated teacher has the
    same layers at other widths. Exit 2 when no valid latency model is cached for this device, onnxruntime
    version, thread count and batch (stale ones are named); `edgekd calibrate` builds one.
    """
    from edgekd.latency.predict import predict_onnx
    from edgekd.results import to_dict

    result = predict_onnx(model, target, threads, batch, str(cache_dir) if cache_dir else None)
    emit(
        to_dict(result),
        as_json,
        lambda: click.echo(
            f"{model}: predicted p50 {result.p50_ms:.3f} ms on {target} ({threads} thread(s), batch {batch})"
        ),
    )
