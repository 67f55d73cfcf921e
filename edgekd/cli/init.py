"""``edgekd init``: write a commented starter recipe for the user's model, checkpoint and dataset folder."""

from __future__ import annotations

import re
from pathlib import Path

import click

from edgekd.cli import cli
from edgekd.cli.options import TRUST_OPT, existing_file
from edgekd.cli.policy import command
from edgekd.errors import InputError

_SIZE = re.compile(r"^(\d+)(?:x(\d+))?$")


def parse_size(text: str) -> tuple[int, int]:
    """``"224"`` → (224, 224), ``"96x128"`` → (96, 128): height × width, as ``data.args.size`` holds them."""
    match = _SIZE.match(text.strip().lower())
    if not match or int(match.group(1)) < 1 or int(match.group(2) or 1) < 1:
        raise InputError(f"--size {text}: give SIZE or HEIGHTxWIDTH in pixels, e.g. 224 or 96x128")
    height = int(match.group(1))
    return height, int(match.group(2) or height)


@cli.command("init", short_help="Write a starter recipe for your model and data.")
@click.option(
    "--model",
    required=True,
    metavar="NAME",
    help="The teacher's architecture: torchvision:<name>, timm:<name>, a built-in (resnet20, unet, "
    "mobilenet_v2, ...) or package.module:factory.",
)
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Dataset folder: ROOT/train/<class>/ + ROOT/val/<class>/ (image_folder) or "
    "ROOT/{train,val}/{images,masks}/ (seg_folder).",
)
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    callback=existing_file,
    help="Your trained weights (a state dict); checked against the model and the folder's classes. "
    "Without it the teacher has random weights: `edgekd train RECIPE --out DIR` trains one.",
)
@click.option(
    "--task",
    type=click.Choice(["classification", "segmentation"]),
    help="Default: from the folder's layout; a contradiction is an error.",
)
@click.option(
    "--target",
    "targets",
    multiple=True,
    metavar="NAME",
    help="Also profile on this device: a name from targets.yaml or ssh://user@host[:port] (repeatable).",
)
@click.option(
    "--size",
    metavar="H[xW]",
    help="Input size in pixels. Default: the model's (torchvision classification: 224; timm: its "
    "pretrained_cfg), else the first training image's.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the recipe to this file (paths in it are then relative to it). Default: stdout.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing --output file.")
@TRUST_OPT
@command
def init_command(
    model: str,
    data_dir: Path,
    checkpoint: Path | None,
    task: str | None,
    targets: tuple[str, ...],
    size: str | None,
    output: Path | None,
    force: bool,
    trust_checkpoint: bool,
) -> None:
    """Write a commented starter recipe that runs as is with `edgekd compress`.

    \b
    It reads what only your files know and writes it down, one comment per key:
      - the dataset kind from the folder layout, the classes and image counts;
      - the input size and normalisation the model family publishes (torchvision: 224 and ImageNet
        mean/std; timm: the model's pretrained_cfg), else the images' size and measured statistics;
      - prune half the MACs (channels in multiples of 8), distil with CE + KD, export ONNX with the
        parity gate and INT8, profile on this machine and on every --target.
    The recipe is loaded with the same checks as `edgekd compress` before it is written.

    \b
    Example:
      edgekd init --model torchvision:mobilenet_v3_large --checkpoint my.pt --data /data/parts \\
          --target pi5 -o recipe.yaml
      edgekd compress recipe.yaml --out runs/parts
    """
    from edgekd.run.starter import StarterOptions, starter_recipe

    if output is not None and output.exists() and not force:
        raise InputError(f"--output {output}: file exists; pass --force to overwrite it")
    if output is not None and not output.resolve().parent.is_dir():
        raise InputError(f"--output {output}: directory {output.parent} does not exist")
    options = StarterOptions(
        model=model,
        data=data_dir,
        checkpoint=checkpoint,
        task=task,
        targets=targets,
        size=parse_size(size) if size is not None else None,
        trust_checkpoint=trust_checkpoint,
        output=output,
        command=_command_line(model, data_dir, checkpoint, targets, size),
    )
    starter = starter_recipe(options)
    if output is None:
        click.echo(starter.text, nl=False)
        return
    from edgekd.io import write_text

    write_text(output, starter.text)  # atomic: a failed init never leaves half a recipe
    s = starter.survey
    click.echo(
        f"wrote {output}: {s.dataset} ({s.task}, {s.num_classes} classes, {s.counts[0]} training images), "
        f"{starter.model.name} at {starter.size[0]}x{starter.size[1]}\n"
        f"next: edgekd compress {output} --out {options.suggested_out}"
    )


def _command_line(
    model: str, data_dir: Path, checkpoint: Path | None, targets: tuple[str, ...], size: str | None
) -> tuple[str, ...]:
    """The options that shaped the recipe, for its header comment (so it says how to write it again)."""
    words = ["edgekd", "init", "--model", model]
    if checkpoint is not None:
        words += ["--checkpoint", str(checkpoint)]
    words += ["--data", str(data_dir)]
    for target in targets:
        words += ["--target", target]
    if size is not None:
        words += ["--size", size]
    return tuple(words)
