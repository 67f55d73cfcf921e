"""What the feature losses share: hooked (student, teacher) module pairs and the automatic channel adaptor.

Why an adaptor is built at construction from :class:`LossContext` shapes: pruning leaves the student with fewer
channels than the teacher at the same module name. The adaptor's size is known only after hooking both models,
and the optimizer must see its parameters from the first step. It lives inside the loss module, so it trains
with the student and is dropped before export. It never becomes part of the student.

The default module names (``layer1``..``layer3``) are the stages of edgekd's CIFAR ResNets, whose names survive
pruning. Other models name their own modules (``model.named_modules()``). Typos are rejected before training
with a did-you-mean.

Two bases carry the mechanics, so a feature loss implements only its math: :class:`FeaturePairLoss` hooks the
pairs and hands ``compute`` the (student, teacher) outputs; :class:`AdaptedPairLoss` adds one channel adaptor
per pair (``fitnet``, ``channel_corr``). ``at`` uses the first: attention maps average channels away.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, ValidationInfo, field_validator
from torch import nn

from edgekd.distill.losses._schedule import ScheduledParams
from edgekd.distill.losses.base import DistillBatch, DistillLoss, LossContext
from edgekd.errors import InputError

Names = str | list[str]


class FeaturePairParams(ScheduledParams):
    """``student`` / ``teacher``: module name(s) whose outputs are compared, pairwise in order.

    ``teacher`` defaults to the same names as ``student`` (what a pruned student has).
    """

    student: Names = Field("layer2", description="Student module name(s), as in named_modules().")
    teacher: Names | None = Field(None, description="Teacher module name(s); default: the student's.")

    @field_validator("student")
    @classmethod
    def _non_empty(cls, value: Names) -> Names:
        names = [value] if isinstance(value, str) else value
        if not names or not all(names):
            raise ValueError("name at least one module (as in model.named_modules())")
        return value

    @field_validator("teacher")
    @classmethod
    def _same_count(cls, value: Names | None, info: ValidationInfo) -> Names | None:
        student = info.data.get("student")
        if value is None or student is None:
            return value
        n_s = 1 if isinstance(student, str) else len(student)
        n_t = 1 if isinstance(value, str) else len(value)
        if n_s != n_t or not all([value] if isinstance(value, str) else value):
            raise ValueError(f"list as many teacher modules as student modules ({n_s})")
        return value

    def pairs(self) -> list[tuple[str, str]]:
        """The (student name, teacher name) pairs, in recipe order."""
        student = [self.student] if isinstance(self.student, str) else list(self.student)
        teacher = self.teacher if self.teacher is not None else student
        teacher = [teacher] if isinstance(teacher, str) else list(teacher)
        return list(zip(student, teacher, strict=True))


def hooked_pairs(params: FeaturePairParams) -> tuple[list[str], list[str]]:
    """``hooked_modules`` for a feature loss: the student names and the teacher names."""
    pairs = params.pairs()
    return [s for s, _ in pairs], [t for _, t in pairs]


def feature_shape(ctx: LossContext, role: str, name: str) -> torch.Size:
    """The hooked shape of ``name`` recorded on the example batch, as a 4-D N×C×H×W size."""
    shapes = ctx.student_shapes if role == "student" else ctx.teacher_shapes
    if name not in shapes:
        raise InputError(
            f"{role} module '{name}' produced no output on an example batch; hook a module on the forward path"
        )
    shape = shapes[name]
    if len(shape) not in (2, 4):
        raise InputError(
            f"{role} module '{name}' outputs a {len(shape)}-D tensor; feature losses need N×C or N×C×H×W"
        )
    return torch.Size(shape) if len(shape) == 4 else torch.Size((*shape, 1, 1))


def as_map(x: torch.Tensor) -> torch.Tensor:
    """N×C features as N×C×1×1 maps; N×C×H×W unchanged."""
    return x[:, :, None, None] if x.ndim == 2 else x


def resize_to(x: torch.Tensor, size: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Bilinear resize of the trailing H×W of an N×C×H×W map to ``size`` (identity when equal)."""
    size = tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ChannelAdaptor(nn.Module):
    """1×1 conv (no bias) + BatchNorm mapping student channels to teacher channels (the FitNets regressor).

    Why BN: hooked teacher features are post-BN/ReLU activations; the BN lets the adaptor match their scale
    from the first step instead of learning it through the conv weights.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


def build_adaptors(ctx: LossContext, pairs: list[tuple[str, str]]) -> nn.ModuleList:
    """One adaptor per pair whose channel counts differ, ``nn.Identity`` where they already match."""
    adaptors = nn.ModuleList()
    for s_name, t_name in pairs:
        c_s = feature_shape(ctx, "student", s_name)[1]
        c_t = feature_shape(ctx, "teacher", t_name)[1]
        adaptors.append(ChannelAdaptor(c_s, c_t) if c_s != c_t else nn.Identity())
    return adaptors


class FeaturePairLoss(DistillLoss):
    """Base of the losses that compare hooked (student, teacher) module outputs pairwise (``params.pairs()``).

    Subclasses set ``Params`` (a :class:`FeaturePairParams`) and implement ``compute``, reading the outputs
    through :meth:`features`.
    """

    Params = FeaturePairParams

    def __init__(self, params: FeaturePairParams, ctx: LossContext) -> None:
        super().__init__(params, ctx)
        self.pairs = params.pairs()

    @classmethod
    def hooked_modules(cls, params: FeaturePairParams) -> tuple[list[str], list[str]]:
        return hooked_pairs(params)

    def features(self, batch: DistillBatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(student output, detached first-teacher output) per pair, in recipe order."""
        return [(batch.student_features[s], batch.teacher_features[0][t].detach()) for s, t in self.pairs]


class AdaptedPairLoss(FeaturePairLoss):
    """A :class:`FeaturePairLoss` with ``self.adaptors[i]`` mapping pair i's student channels to the teacher's
    (:func:`build_adaptors`), built at construction so the optimizer sees them from the first step."""

    def __init__(self, params: FeaturePairParams, ctx: LossContext) -> None:
        super().__init__(params, ctx)
        self.adaptors = build_adaptors(ctx, self.pairs)
