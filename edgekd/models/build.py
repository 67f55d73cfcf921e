"""Turn a :class:`~edgekd.recipe.schema.ModelSpec` into an ``nn.Module``.

Four spellings: a registered name (``resnet20``), ``torchvision:<name>`` (any ``torchvision.models`` builder,
random init, ``num_classes`` passed through and the first conv adapted to ``in_channels``; segmentation models
such as ``lraspp_mobilenet_v3_large`` return ``{"out": logits}``, which the task reads), ``timm:<name>`` (see
:mod:`edgekd.models.timm_models`), and ``package.module:factory`` — which imports and runs user code *because the
recipe names it*. The factory is called with the spec's ``args`` as keyword arguments, plus ``num_classes`` and
``in_channels`` (from the data, or the spec's own values) when its signature names them.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

from torch import nn

from edgekd.errors import InputError
from edgekd.models import MODELS
from edgekd.models.timm_models import PREFIX as TIMM_PREFIX
from edgekd.models.timm_models import build_timm, check_timm_name
from edgekd.recipe.schema import ModelSpec
from edgekd.registry import did_you_mean

_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_LIBRARY_PREFIXES = ("torchvision:", TIMM_PREFIX)


def runs_user_code(name: str) -> bool:
    """Whether a model name is a ``package.module:factory`` spec (imports and runs the code it names)."""
    return ":" in name and not name.startswith(_LIBRARY_PREFIXES)


def check_model_name(name: str, where: str = "model.name") -> None:
    """Validate a model name's form (and existence, for registered and torchvision names) without building it."""
    if name.startswith("torchvision:"):
        import torchvision

        tv_name = name.split(":", 1)[1]
        available = torchvision.models.list_models()
        if tv_name not in available:
            raise InputError(
                f"{where}: torchvision has no model '{tv_name}'{did_you_mean(tv_name, available)}"
            )
    elif name.startswith(TIMM_PREFIX):
        check_timm_name(name, where)
    elif ":" in name:
        if not _FACTORY.match(name):
            raise InputError(f"{where}: '{name}' is not of the form package.module:factory")
    elif name not in MODELS:
        raise InputError(
            f"{where}: unknown model '{name}'{did_you_mean(name, MODELS.names())} "
            f"(valid: {', '.join(MODELS.names())}, torchvision:<name>, timm:<name>, package.module:factory)"
        )


def build_model(spec: ModelSpec, num_classes: int, in_channels: int) -> nn.Module:
    """Build the model a spec names; recipe values of ``num_classes``/``in_channels`` win over the dataset's."""
    check_model_name(spec.name)
    num_classes = spec.num_classes or num_classes
    in_channels = spec.in_channels or in_channels
    try:
        if spec.name.startswith("torchvision:"):
            return _torchvision(spec.name.split(":", 1)[1], num_classes, in_channels, spec.args)
        if spec.name.startswith(TIMM_PREFIX):
            return build_timm(spec.name, num_classes, in_channels, spec.args)
        if ":" in spec.name:
            return _factory(spec.name, num_classes, in_channels, spec.args)
        return MODELS.get(spec.name)(num_classes=num_classes, in_channels=in_channels, **spec.args)
    except TypeError as exc:
        raise InputError(f"model '{spec.name}': bad teacher.model.args ({exc})") from None


def _torchvision(name: str, num_classes: int, in_channels: int, args: dict[str, Any]) -> nn.Module:
    import torchvision

    if name in torchvision.models.list_models(module=torchvision.models.segmentation):
        # their builders default to an ImageNet backbone (a download); edgekd builds random init everywhere
        args = {"weights_backbone": None, **args}
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **args)
    if in_channels != 3:
        adapt_input_channels(model, in_channels)
    return model


def adapt_input_channels(model: nn.Module, in_channels: int) -> None:
    """Replace the first convolution so the model accepts ``in_channels`` (e.g. grey images)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            new = nn.Conv2d(
                in_channels,
                module.out_channels,
                module.kernel_size,
                module.stride,
                module.padding,
                module.dilation,
                1,
                module.bias is not None,
                module.padding_mode,
            )
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)
            return
    raise InputError("cannot adapt input channels: the model has no Conv2d layer")


def _factory(name: str, num_classes: int, in_channels: int, args: dict[str, Any]) -> nn.Module:
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"model '{name}': cannot import {module_name} ({exc})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InputError(f"model '{name}': {module_name} has no callable '{attr}'")
    params = inspect.signature(factory).parameters
    kwargs = dict(args)
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if key in params and key not in kwargs:
            kwargs[key] = value
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise InputError(f"model '{name}': factory returned {type(model).__name__}, not an nn.Module")
    return model
