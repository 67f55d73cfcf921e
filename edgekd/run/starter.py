"""``edgekd init``: a commented starter recipe for the user's model, checkpoint and dataset folder.

Why generated and not copied from an example: the values a first recipe gets wrong are the ones only the user's
files know (which dataset layout, how many classes, what input size and normalisation the checkpoint was trained
with), and a wrong normalisation fails silently. The survey (:mod:`edgekd.run.survey`) reads them; this module
writes every key with a one-line comment saying what it does, and loads the result through the same checks as
``compress`` before handing it out, so what ``init`` prints runs as is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edgekd import __version__
from edgekd.errors import InputError
from edgekd.run.survey import FolderSurvey, ModelPreference, model_preference, survey_folder

COMMENT_COLUMN = 36  # comments line up here (or one space after a longer line)
Line = tuple[str, str]  # (YAML text, its comment)


@dataclass(frozen=True)
class StarterOptions:
    """What the user told ``edgekd init``; ``output`` is the recipe file (``None``: stdout).

    Paths near the recipe's directory are written relative to it (recipes resolve paths against their own
    directory), others absolute, so the recipe keeps working wherever the user runs ``compress`` from.
    """

    model: str
    data: Path
    checkpoint: Path | None = None
    task: str | None = None
    targets: tuple[str, ...] = ()
    size: tuple[int, int] | None = None
    trust_checkpoint: bool = False
    output: Path | None = None
    command: tuple[str, ...] = ()

    @property
    def recipe_dir(self) -> Path | None:
        return self.output.resolve().parent if self.output is not None else None

    @property
    def suggested_out(self) -> Path:
        """``runs/<recipe name>`` (else ``runs/<data folder name>``) for the next command, never the data itself."""
        data = self.data.resolve()
        out = Path("runs", self.output.stem if self.output is not None else data.name or "run")
        return out.with_name(f"{out.name}_run") if data.is_relative_to(out.resolve()) else out


@dataclass(frozen=True)
class Starter:
    """The written recipe and the facts behind it (for the command's summary line)."""

    text: str
    survey: FolderSurvey
    model: ModelPreference
    size: tuple[int, int]
    channels: int


def starter_recipe(options: StarterOptions) -> Starter:
    """Survey the folder and the model, write the commented recipe, and check that it loads.

    Raises:
        InputError: a missing folder or checkpoint, an unknown model or target, a task the data or model
            contradicts, a checkpoint that does not fit the model and dataset.
    """
    survey = survey_folder(options.data)
    model = model_preference(options.model)
    task = _task(options, survey, model)
    size = options.size or model.input_size or survey.image_size
    channels = model.channels or survey.channels
    _check_targets(options.targets)
    if options.checkpoint is not None:
        _check_checkpoint(options.checkpoint, options, survey, channels)
    lines = [
        *_header(options),
        (f"task: {task}", "classification: one class per image; segmentation: one per pixel"),
        ("seed: 0", "seeds the validation split, augmentation and training order"),
        *_data(options, survey, model, size, channels),
        *_teacher(options, model),
        *_prune(),
        *_distill(task),
        *_export(),
        *_profile(options.targets),
        *_gates(),
    ]
    text = "".join(_render(line) for line in lines)
    _check_loads(text, options)
    return Starter(text=text, survey=survey, model=model, size=size, channels=channels)


def _task(options: StarterOptions, survey: FolderSurvey, model: ModelPreference) -> str:
    """The folder's task, unless ``--task`` or the model contradicts it (then one line saying which)."""
    if options.task is not None and options.task != survey.task:
        raise InputError(
            f"--task {options.task}: {survey.root} is laid out as {survey.dataset}, which is {survey.task} data"
        )
    if model.task is not None and model.task != survey.task:
        raise InputError(
            f"--model {model.name} is a {model.task} model, but {survey.root} is laid out as {survey.dataset} "
            f"({survey.task}); pick a {survey.task} model"
        )
    return survey.task


def _check_targets(targets: tuple[str, ...]) -> None:
    """Each ``--target`` must resolve now (a registered name, a URL, or a targets.yaml entry): no connecting."""
    from edgekd.profile import get_target

    for name in targets:
        try:
            get_target(name)
        except InputError as exc:
            raise InputError(
                f"--target {name}: {exc}; declare it in targets.yaml (README: Remote devices over SSH) "
                "or give ssh://user@host"
            ) from None


def _check_checkpoint(checkpoint: Path, options: StarterOptions, survey: FolderSurvey, channels: int) -> None:
    """Load the checkpoint into the model as ``compress`` will (classes and channels from the folder).

    Why now: a checkpoint whose head has 1,000 ImageNet classes against a 12-class folder is the likeliest
    first failure, and saying so here beats a recipe that fails at its first stage.
    """
    from edgekd.models import build_model, load_checkpoint, load_weights
    from edgekd.models.checkpoint import extract_state_dict
    from edgekd.recipe.schema import ModelSpec

    source = f"--checkpoint {checkpoint}"
    raw = load_checkpoint(checkpoint, trust=options.trust_checkpoint)
    model = build_model(ModelSpec(name=options.model), survey.num_classes, channels)
    try:
        load_weights(model, extract_state_dict(raw, source=source), source=source)
    except InputError as exc:
        raise InputError(
            f"{exc} (the model was built for the {survey.num_classes} classes and {channels} "
            f"channel(s) of {survey.root})"
        ) from None


def _path(path: Path, recipe_dir: Path | None) -> str:
    """``path`` as the recipe should name it: relative to the recipe's directory when near it (at most two
    ``..``: the same project), else absolute (``/data/parts`` stays ``/data/parts``)."""
    absolute = path.resolve()
    if recipe_dir is None:
        return str(absolute)
    relative = os.path.relpath(absolute, recipe_dir.resolve())
    return relative if Path(relative).parts[:3].count("..") < 3 else str(absolute)


def _header(options: StarterOptions) -> list[Line]:
    recipe = options.output or "THIS_FILE.yaml"
    return [
        ("", f"Starter recipe, written by edgekd {__version__}:"),
        ("", f"  {' '.join(options.command) or 'edgekd init'}"),
        ("", f"Run it:  edgekd compress {recipe} --out {options.suggested_out}"),
        ("", "Every key, its default and its meaning: `edgekd schema`; the README explains each section."),
    ]


def _data(
    options: StarterOptions,
    survey: FolderSurvey,
    model: ModelPreference,
    size: tuple[int, int],
    channels: int,
) -> list[Line]:
    train, evaluated = survey.counts
    size_note, channels_note = _input_notes(options, survey, model, channels)
    lines: list[Line] = [
        ("data:", ""),
        ("  ", f"found {survey.num_classes} classes, {train} training and {evaluated} evaluation images"),
        ("  ", _classes_note(survey)),
        (f"  name: {survey.dataset}", f"detected from the layout of {survey.root.name}/"),
        (f"  root: {_flow(_path(survey.root, options.recipe_dir))}", "the dataset folder"),
        ("  args:", "options of the dataset (`edgekd schema`)"),
        (f"    size: {_flow(list(size))}", size_note),
        (f"    channels: {channels}", channels_note),
        (f"    eval: {survey.eval}", "the held-out test split; nothing is selected on it"),
    ]
    if survey.val_dir is not None:
        lines.append((f"  val: {survey.val_dir}", "validation split (picks the best epoch): this directory"))
    else:
        lines.append(("  val: 0.1", "validation split (picks the best epoch): 10% of the training images"))
    lines += _preprocessing(model)
    lines += [
        ("  augment: true", "training augmentation: random crops and horizontal flips"),
        ("  batch_size: 64", "images per training step; lower it if memory runs out"),
    ]
    return lines


def _classes_note(survey: FolderSurvey) -> str:
    """The class names in index order (as many as fit one line), or how segmentation classes were counted."""
    if not survey.classes:
        return "classes: the largest mask label + 1 (255 = ignore); seg_folder counts them again at load"
    shown: list[str] = []
    for name in survey.classes:
        if len(", ".join([*shown, name])) > 80:
            break
        shown.append(name)
    more = f", ... ({len(survey.classes) - len(shown)} more)" if len(shown) < len(survey.classes) else ""
    return f"classes in index order: {', '.join(shown)}{more}"


def _input_notes(
    options: StarterOptions, survey: FolderSurvey, model: ModelPreference, channels: int
) -> tuple[str, str]:
    """The comments of ``data.args.size`` and ``channels``: where each value came from."""
    if options.size or model.input_size:
        source = "--size" if options.size else model.source
        size_note = f"[height, width] the images are resized to ({source})"
    elif survey.sizes_differ:
        size_note = "[height, width] of the first training image; the others differ and are resized to it"
    else:
        size_note = "[height, width] of the training images"
    kind = "RGB" if channels == 3 else "grey" if channels == 1 else f"{channels} channels"
    if model.channels is None:
        return size_note, f"{kind}, from the first image (1 = grey, 3 = RGB)"
    converted = "; grey images are converted" if survey.channels != channels else ""
    return size_note, f"{kind}, what the model takes{converted}"


def _preprocessing(model: ModelPreference) -> list[Line]:
    """``data.preprocessing`` as the model family publishes it, where this edgekd has that key."""
    if model.preprocessing is None:
        return [("  preprocessing: measured", "mean/std of a sample of the training images")]
    return [(f"  preprocessing: {_flow(model.preprocessing)}", f"what the teacher expects ({model.source})")]


def _teacher(options: StarterOptions, model: ModelPreference) -> list[Line]:
    lines: list[Line] = [
        ("teacher:", "the trained model to compress"),
        ("  model:", ""),
        (f"    name: {_flow(model.name)}", "the architecture; classes and channels come from the data"),
    ]
    if options.checkpoint is None:
        lines.append(("  checkpoint: null", "none given: random weights; `edgekd train` can train them"))
    else:
        lines.append(
            (f"  checkpoint: {_flow(_path(options.checkpoint, options.recipe_dir))}", "your trained weights")
        )
    if options.trust_checkpoint:
        lines.append(("  trust_checkpoint: true", "unpickles the checkpoint (runs its code)"))
    return lines


def _prune() -> list[Line]:
    return [
        ("prune:", "structural pruning with torch-pruning: whole channels go"),
        ("  importance: group_l2", "rank channels by the L2 norm of their coupled weights"),
        ("  target: macs", "what reduction measures (macs | params | channels)"),
        ("  reduction: 0.5", "remove half of the teacher's MACs"),
        ("  round_to: 8", "channel counts stay multiples of 8 for SIMD (16 suits wide nets on AVX-512)"),
        ("  iterative_steps: 4", "prune in 4 steps, re-scoring channels between them"),
    ]


def _distill(task: str) -> list[Line]:
    """The quickstart's loss mix for classification; the per-pixel pair of the segmentation recipes."""
    if task == "segmentation":
        losses = [
            ("    - {name: ce, weight: 1.0}", "cross-entropy on the label masks"),
            ("    - {name: pixel_kd, weight: 1.0, temperature: 1.0}", "each pixel's class distribution"),
        ]
    else:
        losses = [
            ("    - {name: ce, weight: 0.5}", "cross-entropy on the labels"),
            ("    - {name: kd, weight: 0.5, temperature: 4.0}", "Hinton KD: the teacher's softened outputs"),
        ]
    return [
        ("distill:", "recovery training: the pruned student learns from the unpruned teacher"),
        ("  epochs: 5", "passes over the training images; more recover more accuracy"),
        ("  optimizer: sgd", "sgd | adamw"),
        ("  lr: 0.01", "learning rate at the start of the schedule"),
        ("  schedule: cosine", "learning rate decays to 0 over the epochs"),
        ("  losses:", "weighted sum of distillation losses"),
        *losses,
    ]


def _export() -> list[Line]:
    return [
        ("export:", "student.onnx: parity-checked against PyTorch, evaluated in ONNX Runtime"),
        ("  opset: 18", "ONNX opset"),
        ("  parity_samples: 256", "eval images compared PyTorch vs ONNX Runtime; a mismatch exits 3"),
        ("  int8: true", "also ship student.int8.onnx (static INT8, calibrated on training images)"),
    ]


def _profile(targets: tuple[str, ...]) -> list[Line]:
    names = list(dict.fromkeys(("local", *targets)))
    return [
        ("profile:", "latency and memory of teacher and student with ONNX Runtime"),
        (f"  targets: {_flow(names)}", "where to measure; local = this machine"),
        ("  ", 'a device over SSH: "ssh://user@host:22", or a name declared in targets.yaml'),
        ("  ", "($EDGEKD_TARGETS, else ./targets.yaml: README, Remote devices over SSH);"),
        ("  ", "`edgekd targets --check NAME` tests it before a run"),
        ("  threads: [1, 0]", "intra-op threads to time (0 = all cores)"),
    ]


def _gates() -> list[Line]:
    return [
        ("", "Release criteria for CI (exit 3 when one fails), e.g.:"),
        ("", "gates:"),
        ("", "  max_metric_drop: {accuracy: 0.01}"),
    ]


def _flow(value: Any) -> str:
    """One YAML scalar or flow collection, as safe_dump writes it (quoted only where YAML needs it)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip()
    return text.removesuffix("...").strip()


def _render(line: Line) -> str:
    text, comment = line
    if not comment:
        return f"{text}\n"
    if not text.strip():  # a comment line, indented as the keys around it
        return f"{text}# {comment}\n"
    return f"{text.ljust(COMMENT_COLUMN - 1)} # {comment}\n"


def _check_loads(text: str, options: StarterOptions) -> None:
    """Load ``text`` as ``compress`` would, every name checked; its paths as the recipe's directory resolves them."""
    from edgekd.recipe.load import parse_yaml
    from edgekd.run.components import recipe_from_dict

    data = parse_yaml(text, source="edgekd init")
    data["data"]["root"] = str(options.data.resolve())
    if options.checkpoint is not None:
        data["teacher"]["checkpoint"] = str(options.checkpoint.resolve())
    recipe_from_dict(data, source="the recipe edgekd init wrote")
