"""``timm:<name>`` teachers: any ``timm.create_model`` architecture, random init, weights from the recipe.

Why a spelling of its own rather than ``timm:create_model`` through the factory path: timm names its input
channels ``in_chans`` (the factory path passes ``in_channels`` only to signatures that take it), has ~1,300
names worth validating with a close match before anything is built, and would download pretrained weights from
the Hugging Face hub when asked. edgekd never downloads at run time: ``pretrained: true`` is refused, and the
weights come from ``teacher.checkpoint``, a state dict saved once with timm::

    model = timm.create_model("mobilenetv3_large_100", pretrained=True, num_classes=5)  # once, online
    torch.save(model.state_dict(), "teacher.pt")

Recipe::

    teacher: {model: {name: timm:mobilenetv3_large_100}, checkpoint: teacher.pt}
    teacher: {model: {name: timm:vit_tiny_patch16_224, args: {img_size: 64, patch_size: 8}}}

timm is an optional dependency (``pip install edgekd[timm]``); without it a ``timm:`` name is one error line.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

from torch import nn

from edgekd.errors import InputError
from edgekd.registry import did_you_mean

PREFIX = "timm:"
INSTALL_HINT = "pip install edgekd[timm]"
# create_model arguments that would fetch or read weights behind edgekd's back (teacher.checkpoint loads them
# with the safe loader); edgekd fills num_classes/in_chans itself.
_REFUSED_ARGS = ("pretrained", "checkpoint_path")
_OWN_ARGS = {"num_classes": "model.num_classes", "in_chans": "model.in_channels"}


def import_timm(name: str) -> ModuleType:
    """The ``timm`` package, or an InputError saying how to install it."""
    try:
        import timm
    except ImportError:
        raise InputError(f"model '{name}' needs timm, which is not installed: {INSTALL_HINT}") from None
    return timm


@functools.cache
def _timm_names() -> tuple[str, ...]:
    return tuple(import_timm(PREFIX).list_models())


def check_timm_name(name: str, where: str) -> None:
    """Validate ``timm:<arch>[.<tag>]`` against ``timm.list_models()``, with a close match when it is unknown."""
    import_timm(name)
    arch = name.removeprefix(PREFIX).split(".", 1)[
        0
    ]  # 'vit_tiny_patch16_224.augreg_in21k': the tag picks weights
    if arch not in _timm_names():
        raise InputError(f"{where}: timm has no model '{arch}'{did_you_mean(arch, _timm_names())}")


def build_timm(name: str, num_classes: int, in_channels: int, args: dict[str, Any]) -> nn.Module:
    """``timm.create_model(arch, pretrained=False, num_classes=..., in_chans=..., **args)``.

    Raises:
        InputError: timm is missing, ``args`` asks for downloaded or file weights, or sets what edgekd fills.
    """
    timm = import_timm(name)
    arch = name.removeprefix(PREFIX)
    refused = [key for key in _REFUSED_ARGS if args.get(key)]
    if refused:
        raise InputError(
            f"model '{name}': teacher.model.args.{refused[0]} would load weights edgekd does not check (and "
            f"'pretrained' downloads them at run time, which edgekd never does); download them once with timm "
            f"(torch.save(timm.create_model('{arch}', pretrained=True).state_dict(), 'teacher.pt')) and pass "
            "teacher.checkpoint"
        )
    clash = [key for key in _OWN_ARGS if key in args]
    if clash:
        raise InputError(
            f"model '{name}': set {_OWN_ARGS[clash[0]]} instead of teacher.model.args.{clash[0]} "
            "(edgekd passes it to timm)"
        )
    extra = {k: v for k, v in args.items() if k not in _REFUSED_ARGS}  # what is left: pretrained: false
    return timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_channels, **extra)
