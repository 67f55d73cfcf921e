"""Build the recipe's teacher(s) from their sections and check them against the dataset before any work.

Checkpoints load with ``weights_only`` unless the recipe says ``trust_checkpoint`` (see
:mod:`edgekd.models.checkpoint`); every teacher is returned in eval mode.
"""

from __future__ import annotations

from torch import nn

from edgekd.data import DataBundle
from edgekd.errors import InputError
from edgekd.models import build_model, load_checkpoint, load_weights
from edgekd.models.checkpoint import extract_state_dict
from edgekd.recipe.schema import Recipe, TeacherConfig
from edgekd.tasks import Task


def build_teacher(recipe: Recipe, data: DataBundle, load: bool = True) -> nn.Module:
    """The teacher model of a recipe, with its checkpoint loaded when ``load`` and one is given."""
    return teacher_from_config(recipe.teacher, data, load)


def teacher_from_config(cfg: TeacherConfig, data: DataBundle, load: bool = True) -> nn.Module:
    """Build one teacher section's model (eval mode) and load its checkpoint when ``load`` and one is given."""
    model = build_model(cfg.model, data.num_classes, data.in_channels)
    if load and cfg.checkpoint is not None:
        raw = load_checkpoint(cfg.checkpoint, trust=cfg.trust_checkpoint)
        state = extract_state_dict(raw, source=str(cfg.checkpoint))
        load_weights(model, state, source=str(cfg.checkpoint))
    return model.eval()


def build_extra_teachers(recipe: Recipe, data: DataBundle) -> list[nn.Module]:
    """``distill.extra_teachers``, loaded and frozen (they only ever run under ``inference_mode``)."""
    return [teacher_from_config(cfg, data).requires_grad_(False) for cfg in recipe.distill.extra_teachers]


def check_teacher(teacher: nn.Module, data: DataBundle, task: Task) -> None:
    """Fail fast, as bad input naming the layer, when the teacher cannot take the dataset's images.

    Without this, a wrong ``in_channels`` or an output the task cannot read surfaces as a bare shape or type
    error deep inside evaluation.
    """
    from edgekd.prune.layers import forward_or_explain

    out = forward_or_explain(
        teacher.eval(),
        data.example_input(2),
        "teacher.model",
        "check teacher.model (in_channels, num_classes, args) against the dataset",
    )
    try:
        task.output_tensor(out)
    except TypeError as exc:
        raise InputError(
            f"teacher.model: {exc}; return a tensor, a tuple starting with one, or a dict with key 'out'"
        ) from None
