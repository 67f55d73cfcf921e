"""The ``edgekd`` command line: it parses arguments, calls one stage, prints the result.

Exit codes (docs/run-directory.md): 0 success · 1 runtime failure · 2 bad input · 3 a deploy gate failed.
Errors are one line on stderr; ``--debug`` (or ``EDGEKD_DEBUG=1``) shows the traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgekd import __version__
from edgekd.cli.options import (
    JSON_OPT,
    OUT_OPT,
    RECIPE_ARG,
    SET_OPT,
    TRUST_OPT,
    emit,
    existing_file,
    load,
)
from edgekd.cli.policy import command, one_line
from edgekd.errors import InputError
from edgekd.registry import did_you_mean


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="edgekd")
def cli() -> None:
    """Compress a trained PyTorch model for an edge device from one YAML recipe.

    \b
    Quick start:
      edgekd compress recipes/quickstart.yaml --out runs/quickstart
    Each pipeline stage is also a command: train, prune, distill, export, profile, report.
    `edgekd help COMMAND` is `edgekd COMMAND --help`.
    """


# For people who type `help` first, as git and pip answer it. Resolved through the group at run time, so every
# command added later has its help here too. (A click docstring is the user's help text, hence this comment.)
@cli.command("help", short_help="Show the help of edgekd or of one command.")
@click.argument("names", nargs=-1, metavar="[COMMAND]")
@click.pass_context
def help_command(ctx: click.Context, names: tuple[str, ...]) -> None:
    """Show the help of edgekd, or of COMMAND: `edgekd help compress` is `edgekd compress --help`."""
    target = ctx.parent or ctx
    for name in names:
        group = target.command
        sub = group.get_command(target, name) if isinstance(group, click.Group) else None
        if sub is None:
            valid = group.list_commands(target) if isinstance(group, click.Group) else []
            raise click.UsageError(f"no command '{name}'{did_you_mean(name, valid)}", ctx)
        target = sub.context_class(sub, info_name=name, parent=target, **sub.context_settings)
    click.echo(target.get_help(), color=target.color)


@cli.command(short_help="Train a teacher from a recipe.")
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Where teacher.pt goes."
)
@SET_OPT
@click.option("--resume", is_flag=True, help="Continue from out/state/train-last.pt.")
@TRUST_OPT
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@command
def train(
    recipe: Path,
    out_dir: Path,
    overrides: tuple[str, ...],
    resume: bool,
    trust_checkpoint: bool,
    as_json: bool,
) -> None:
    """Train the recipe's teacher (section `train`) and write OUT/teacher.pt + teacher.json."""
    from edgekd.results import to_dict
    from edgekd.teacher import train_teacher

    run = train_teacher(load(recipe, overrides, trust_checkpoint), out_dir, resume=resume)
    emit(
        {
            "checkpoint": str(run.checkpoint),
            "sha256": run.sha256,
            "metrics": run.summary.metrics,
            "val_metrics": run.summary.val_metrics,
            "macs": run.summary.macs,
            "params": run.summary.params,
            "history": to_dict(run.result.history),
        },
        as_json,
        lambda: click.echo(
            f"teacher: {run.checkpoint} test metrics {run.summary.metrics} "
            f"(validation {run.summary.val_metrics}) sha256 {run.sha256}"
        ),
    )


@cli.command(short_help="Run the whole pipeline into a run directory.")
@RECIPE_ARG
@OUT_OPT
@SET_OPT
@click.option(
    "--resume",
    is_flag=True,
    help="Continue a killed run in OUT: reuse finished stages, continue distillation from its last epoch.",
)
@click.option(
    "--force",
    is_flag=True,
    help="With --resume: accept a changed recipe and rerun only the stages the changed keys affect.",
)
@TRUST_OPT
@JSON_OPT
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Distill data-parallel with N processes on this machine (torchrun; data.batch_size is the global batch).",
)
@command
def compress(
    recipe: Path,
    out_dir: Path,
    overrides: tuple[str, ...],
    resume: bool,
    force: bool,
    trust_checkpoint: bool,
    as_json: bool,
    nproc: int,
) -> None:
    """Run the whole pipeline: evaluate the teacher, prune, distill, export ONNX (+ parity), profile, report.

    Writes OUT/{recipe.yaml, teacher.onnx, student.pt, student.onnx, report.json, report.md, report.html,
    plots/, state/, edgekd.log}. Exit 3 when a deploy gate (e.g. ONNX parity) fails. Without --resume, a
    previous run's state and artifacts in OUT are replaced.
    """
    from edgekd.report.view import headline
    from edgekd.run import compress as run_compress

    resolved = load(recipe, overrides, trust_checkpoint)  # a bad recipe fails here, before any rank starts
    if nproc > 1:
        from edgekd.run.launch import launch

        return launch(nproc, resolved.data.batch_size)
    report = run_compress(resolved, out_dir, resume=resume, force=force)
    if report is not None:  # None on ranks other than 0 of a distributed run: rank 0 prints
        emit(report, as_json, lambda: click.echo(f"{headline(report)}\nreport: {out_dir / 'report.md'}"))


@cli.command(short_help="Prune the teacher into OUT/student.pt.")
@RECIPE_ARG
@OUT_OPT
@SET_OPT
@TRUST_OPT
@JSON_OPT
@command
def prune(
    recipe: Path, out_dir: Path, overrides: tuple[str, ...], trust_checkpoint: bool, as_json: bool
) -> None:
    """Prune the teacher (section `prune`) and write the un-distilled student to OUT/student.pt."""
    from edgekd.results import to_dict
    from edgekd.run import prune_only

    result = prune_only(load(recipe, overrides, trust_checkpoint), out_dir)
    summary = {**to_dict(result), "macs_reduction": result.macs_reduction}
    emit(
        {**summary, "params_reduction": result.params_reduction},
        as_json,
        lambda: click.echo(
            f"pruned: MACs −{100 * result.macs_reduction:.1f}%, params −{100 * result.params_reduction:.1f}% "
            f"→ {out_dir / 'student.pt'}"
        ),
    )


@cli.command(short_help="Distill a student from the teacher.")
@RECIPE_ARG
@OUT_OPT
@SET_OPT
@click.option(
    "--student",
    "student_path",
    type=click.Path(path_type=Path),
    callback=existing_file,
    help="Student to distill (default: OUT/student.pt, e.g. from `edgekd prune`).",
)
@TRUST_OPT
@JSON_OPT
@command
def distill(
    recipe: Path,
    out_dir: Path,
    overrides: tuple[str, ...],
    student_path: Path | None,
    trust_checkpoint: bool,
    as_json: bool,
) -> None:
    """Distill a (pruned) student from the recipe's teacher (section `distill`); rewrites OUT/student.pt."""
    from edgekd.results import to_dict
    from edgekd.run import distill_only

    result = distill_only(load(recipe, overrides, trust_checkpoint), out_dir, student_path)
    emit(
        to_dict(result),
        as_json,
        lambda: click.echo(f"distilled: {result.metrics} → {out_dir / 'student.pt'}"),
    )


@cli.command(short_help="Export a student.pt to ONNX (+ parity).")
@click.argument("student", type=click.Path(path_type=Path), callback=existing_file)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    help="Where student.onnx goes (default: beside STUDENT).",
)
@SET_OPT
@click.option(
    "--trust-checkpoint", is_flag=True, help="Allow unpickling code from STUDENT (trusted files only)."
)
@JSON_OPT
@command
def export(
    student: Path, out_dir: Path | None, overrides: tuple[str, ...], trust_checkpoint: bool, as_json: bool
) -> None:
    """Export a student.pt to ONNX with the parity gate and ORT evaluation (recipe read from the file)."""
    from edgekd.results import to_dict
    from edgekd.run import export_only

    fp32, *variants = export_only(student, out_dir or student.parent, overrides, trust=trust_checkpoint)

    def human() -> None:
        for a in (fp32, *variants):
            click.echo(
                f"{a.path}: parity max|Δ| {a.parity.max_abs_diff:.2e}, agreement {a.parity.agreement:.4f}; "
                f"ORT metrics {a.metrics}"
            )

    emit({**to_dict(fp32), "variants": [to_dict(a) for a in variants]}, as_json, human)


@cli.command(short_help="Latency and memory of any ONNX file.")
@click.argument("model", type=click.Path(path_type=Path), callback=existing_file)
@click.option(
    "--threads",
    multiple=True,
    type=click.IntRange(min=0),
    help="Thread counts (0 = all cores; repeatable). Default: 1 and 0.",
)
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--runs", type=click.IntRange(min=1), help="Fixed number of timed runs (default: adapt to --time-budget)."
)
@click.option(
    "--time-budget",
    type=click.FloatRange(min=0, min_open=True),
    default=3.0,
    show_default=True,
    help="Seconds of measuring per configuration when --runs is not given.",
)
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True)
@click.option(
    "--target",
    "targets",
    multiple=True,
    default=("local",),
    show_default=True,
    help="Where to run: local, ssh://user@host[:port], or a name from targets.yaml ($EDGEKD_TARGETS); "
    "repeatable.",
)
@click.option(
    "--max-ms",
    "max_ms",
    multiple=True,
    metavar="Q=MS",
    help="Deploy gate, e.g. p90=20: exit 3 when any setting's percentile (p50|p90|p99) exceeds MS.",
)
@click.option(
    "--dim",
    "dims",
    multiple=True,
    metavar="NAME=SIZE",
    help="Size of a named dynamic input dimension, e.g. height=224 (repeatable). Default: the size an edgekd "
    "export recorded; a dynamic non-batch dimension without one is refused.",
)
@click.option(
    "--shape",
    "shapes",
    multiple=True,
    metavar="INPUT=SHAPE",
    help="Whole shape of one input, e.g. input=1x3x224x224 (repeatable; wins over --dim; axis 0 = --batch).",
)
@click.option(
    "--provider",
    metavar="NAME",
    help="ONNX Runtime execution provider, e.g. CUDAExecutionProvider, TensorrtExecutionProvider, "
    "CoreMLExecutionProvider (default: CPU); refused where the device's onnxruntime lacks it.",
)
@JSON_OPT
@command
def profile(
    model: Path,
    threads: tuple[int, ...],
    batch: int,
    runs: int | None,
    time_budget: float,
    warmup: int,
    targets: tuple[str, ...],
    max_ms: tuple[str, ...],
    dims: tuple[str, ...],
    shapes: tuple[str, ...],
    provider: str | None,
    as_json: bool,
) -> None:
    """Measure latency and peak memory of any ONNX file with ONNX Runtime (fresh process per setting).

    The probe runs in a fresh process per setting, on this machine or on a device over SSH (the system
    ssh/scp, so ~/.ssh/config, keys and ProxyJump apply; the device needs Python >= 3.8, numpy and
    onnxruntime, not edgekd). Inputs are random, of the shape --shape/--dim give, else of the size an edgekd
    export recorded; the shapes fed are in the JSON's device.inputs, the providers used in device.onnxruntime.
    """
    from edgekd.profile import profile_files
    from edgekd.profile.target import parse_dim, parse_shape
    from edgekd.recipe.schema import ProfileConfig
    from edgekd.results import to_dict

    try:
        cfg = ProfileConfig(
            targets=list(targets),
            threads=list(threads or (1, 0)),
            batch=batch,
            warmup=warmup,
            runs=runs,
            time_budget_s=time_budget,
            dims=dict(parse_dim(text) for text in dims),  # repeated names: the rightmost wins
            shapes=dict(parse_shape(text) for text in shapes),
            provider=provider,
        )
    except ValueError as exc:
        raise InputError(f"profile: {exc}") from None
    if max_ms:  # only then: the report package is the slow part of starting `edgekd profile`
        from edgekd.report.gates import latency_gates, parse_latency_limits, raise_if_failed

        limits = parse_latency_limits(max_ms, targets)  # bad gates fail before anything is timed
    profiles = profile_files({model.name: model}, cfg)[model.name]

    def human() -> None:
        click.echo(f"{model}:")
        for p in profiles:
            lat = p.latency_ms
            click.echo(
                f"  {p.target} threads={p.threads} batch={p.batch}: p50 {lat.p50:.3f} ms, p90 {lat.p90:.3f}, "
                f"p99 {lat.p99:.3f}, first {lat.first:.2f}, load {p.load_ms:.1f} ms, "
                f"peak RSS +{p.peak_rss_mb:.1f} MiB ({p.runs} runs)"
            )

    emit([to_dict(p) for p in profiles], as_json, human)
    if max_ms:
        raise_if_failed([g for gate in limits for g in latency_gates(model.name, profiles, gate)])


@cli.command(short_help="Regenerate the human reports of a run.")
@click.argument("run_dir", type=click.Path(path_type=Path))
@command
def report(run_dir: Path) -> None:
    """Regenerate report.md, report.html and plots/ from RUN_DIR/report.json."""
    from edgekd.report import render

    for path in render(run_dir):
        click.echo(str(path))


@cli.command(short_help="List the profiling targets; check one device.")
@click.option(
    "--check",
    "check_name",
    metavar="NAME",
    help="Verify this target (a name or an ssh:// URL), one line per step: ssh reachable and authenticated, "
    "Python >= 3.8, numpy, onnxruntime. Exit 1 when a check fails.",
)
@JSON_OPT
@command
def targets(check_name: str | None, as_json: bool) -> None:
    """List the targets --target and profile.targets accept, or check one device before profiling on it.

    Lists the registered targets (local) and the named entries of targets.yaml ($EDGEKD_TARGETS, else
    ./targets.yaml) with their kind and address. With --check NAME it connects and verifies what a
    measurement needs, printing ok/FAIL and the reason per step. Exit 0: all passed · 1: a check failed ·
    2: an unknown target or an invalid targets.yaml.
    """
    from edgekd.errors import EdgekdError
    from edgekd.profile.resolve import check_target, list_targets
    from edgekd.results import to_dict

    if check_name is None:
        listing = list_targets()
        emit(to_dict(listing), as_json, lambda: _echo_targets(listing))
        return
    result = check_target(check_name)
    emit(to_dict(result), as_json, lambda: _echo_check(result))
    if not result.ok:
        failed = ", ".join(c.name for c in result.checks if c.status == "fail")
        raise EdgekdError(
            f"target {check_name}: check failed ({failed}); fix what its FAIL line says, then rerun "
            f"edgekd targets --check {check_name}"
        )


def _echo_targets(listing) -> None:  # noqa: ANN001  (a TargetList; imported lazily like every stage)
    """The target list as an aligned table, then where named targets come from and the URL forms."""
    rows = [("NAME", "KIND", "ADDRESS", "THREADS", "NOTES")]
    for t in listing.targets:
        threads = ",".join(map(str, t.threads)) if t.threads else "-"
        rows.append((t.name, t.kind, t.address, threads, t.notes or ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[4])
    if listing.targets_file_found:
        click.echo(f"named targets from {listing.targets_file}")
    else:
        click.echo(f"no {listing.targets_file}: create it (or set $EDGEKD_TARGETS) to name devices")
    click.echo(f"any device by URL: {', '.join(listing.url_forms)}")


def _echo_check(result) -> None:  # noqa: ANN001  (a TargetCheck)
    """``NAME (kind, address)``, then one ``ok``/``FAIL``/``skip`` line per step with its detail."""
    click.echo(f"{result.target} ({result.kind}, {result.address})")
    width = max(len(c.name) for c in result.checks)
    for c in result.checks:
        status = {"ok": "ok", "fail": "FAIL", "skip": "skip"}[c.status]
        click.echo(f"  {status:<4}  {c.name:<{width}}  {c.detail}")


@cli.command(short_help="Print the recipe JSON Schema.")
@click.option("--json", "as_json", is_flag=True, default=True, hidden=True)
@command
def schema(as_json: bool) -> None:
    """Print the recipe JSON Schema (for editor completion and validation)."""
    from edgekd.recipe.schema import Recipe

    click.echo(json.dumps(Recipe.model_json_schema(), indent=2))


# click >= 8.2 raises this for a bare `edgekd` (and would print the help on stderr, exit 2); 8.1 printed it itself.
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def main() -> None:
    """Entry point. Usage errors (bad option, missing argument) are one line and exit 2, like bad input.

    A bare ``edgekd`` is a request for help, not a usage error: the help goes to stdout and the exit is 0, as
    with ``--help``. Shell completion (``_EDGEKD_COMPLETE=bash_source edgekd``) is answered inside
    ``cli.main``, which exits by itself.
    """
    try:
        cli.main(prog_name="edgekd", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except _NO_ARGS_IS_HELP as exc:
        click.echo(exc.ctx.get_help(), color=exc.ctx.color)
        sys.exit(0)
    except click.Abort:
        click.echo("edgekd: interrupted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        hint = (
            f" (see 'edgekd {exc.ctx.info_name} --help')" if exc.ctx and exc.ctx.info_name != "edgekd" else ""
        )
        click.echo(f"edgekd: error: {one_line(exc.format_message())}{hint}", err=True)
        sys.exit(2)


from edgekd.cli import init as _init  # noqa: E402,F401  (registers init)
from edgekd.cli import latency as _latency  # noqa: E402,F401  (registers calibrate, predict)

__all__ = ["cli", "main", "InputError"]
