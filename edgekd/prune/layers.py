"""Which layers pruning may touch, and what their widths were before and after.

Why output heads are found on the dependency graph rather than by ``out_features == num_classes``: a layer in
the middle of a network can have as many channels as there are classes (ResNet-20 has 16/32/64-wide stages;
a 64-class dataset would collide). A head is a conv/linear layer from which the model's output is reached
without passing through another conv/linear layer — pruning its output channels would change what the model
predicts, so it is never pruned (its *input* channels still shrink with the layer before it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from edgekd.errors import InputError
from edgekd.registry import did_you_mean
from edgekd.results import LayerChannels

log = logging.getLogger("edgekd")

IGNORE_HINT = "add the layer named in the message (or its parent) to prune.ignored_layers"

# Layers that own channels: their output width is what pruning changes.
ROOT_TYPES: tuple[type[nn.Module], ...] = (nn.modules.conv._ConvNd, nn.Linear)
RECORDED_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd,
    nn.Linear,
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.PReLU,
)


def width(module: nn.Module) -> int | None:
    """Output channels / features of a layer that owns them, ``None`` for other modules."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return int(module.out_channels)
    if isinstance(module, nn.Linear):
        return int(module.out_features)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return int(module.num_features)
    if isinstance(module, nn.GroupNorm):
        return int(module.num_channels)
    if isinstance(module, nn.LayerNorm):
        return int(module.normalized_shape[-1])
    if isinstance(module, nn.PReLU):
        return int(module.num_parameters)
    return None


def in_width(module: nn.Module) -> int | None:
    """Input channels / features of a conv or linear layer, ``None`` for other modules."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return int(module.in_channels)
    if isinstance(module, nn.Linear):
        return int(module.in_features)
    return None


def narrowed_heads(before: nn.Module, after: nn.Module, heads: Iterable[str]) -> list[tuple[str, int, int]]:
    """``(name, inputs, outputs)`` of the heads that pruning (``before`` → ``after``) left reading fewer
    channels than they emit.

    Why: pruning keeps a head's outputs but shrinks its inputs with the layer before it. A segmentation head
    reading 4 channels for 11 classes is a bottleneck no amount of distillation trains around (measured: a
    U-Net on fashion_scenes stuck at all-background, 7% mIoU, until the layer feeding its head was kept).
    """
    old, new = dict(before.named_modules()), dict(after.named_modules())
    narrow = []
    for name in heads:
        inputs, outputs = in_width(new[name]), width(new[name])
        if inputs is None or outputs is None:
            continue
        if inputs < outputs and inputs < (in_width(old[name]) or 0):
            narrow.append((name, inputs, outputs))
    return narrow


def layer_widths(model: nn.Module) -> dict[str, tuple[str, int]]:
    """``{module name: (class name, width)}`` for every layer whose width pruning can change."""
    widths: dict[str, tuple[str, int]] = {}
    for name, module in model.named_modules():
        if isinstance(module, RECORDED_TYPES):
            w = width(module)
            if w is not None:
                widths[name] = (type(module).__name__, w)
    return widths


def channel_records(
    before: dict[str, tuple[str, int]], after: dict[str, tuple[str, int]]
) -> tuple[LayerChannels, ...]:
    """One :class:`LayerChannels` per recorded layer, pruned or not, in module order."""
    return tuple(
        LayerChannels(name=name, kind=kind, before=w, after=after.get(name, (kind, 0))[1])
        for name, (kind, w) in before.items()
    )


def resolve_ignored(model: nn.Module, names: Iterable[str]) -> list[nn.Module]:
    """Map ``prune.ignored_layers`` names to modules; an unknown name raises with a close match."""
    modules = dict(model.named_modules())
    candidates = [n for n in modules if n]
    resolved = []
    for name in names:
        if name not in modules or not name:
            hint = did_you_mean(name, candidates)
            examples = ", ".join(n for n, m in model.named_modules() if isinstance(m, ROOT_TYPES))
            shown = examples if len(examples) < 300 else examples[:300] + "…"
            raise InputError(
                f"prune.ignored_layers: the model has no module '{name}'{hint} (prunable layers: {shown})"
            )
        resolved.append(modules[name])
    return resolved


def output_layers(graph: Any) -> list[nn.Module]:
    """Conv/linear layers of a torch-pruning ``DependencyGraph`` that feed the model output directly.

    Walks forward from each such layer through parameter-free ops and norms; reaching a node with no
    consumers (a model output) before any other conv/linear layer makes it a head.
    """
    heads = []
    for module, node in graph.module2node.items():
        if not isinstance(module, ROOT_TYPES):
            continue
        seen: set[int] = set()
        stack = list(node.outputs)
        is_head = not node.outputs
        while stack and not is_head:
            current = stack.pop()
            if id(current) in seen:
                continue
            seen.add(id(current))
            if isinstance(current.module, ROOT_TYPES):
                continue
            if not current.outputs:
                is_head = True
            stack.extend(current.outputs)
        if is_head:
            heads.append(module)
    return heads


def head_names(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of ``model``'s output layers (see :func:`output_layers`): kept at full width by every pruning step.

    Raises:
        InputError: torch-pruning cannot trace the model.
    """
    import torch_pruning as tp

    try:
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    except Exception as exc:  # torch-pruning raises anything from tracing user code
        raise InputError(
            f"torch-pruning cannot trace the model ({describe_error(exc)}); {IGNORE_HINT}"
        ) from exc
    names = {id(m): n for n, m in model.named_modules()}
    heads = [names[id(m)] for m in output_layers(graph) if id(m) in names]
    log.debug("output layers kept at full width: %s", heads)
    return heads


def forward_or_explain(
    model: nn.Module, example: torch.Tensor, what: str, hint: str | Callable[[str, list[str]], str]
) -> Any:
    """Run ``model(example)``; on failure raise InputError naming the innermost module that was running.

    ``hint`` ends the message; a callable gets that module's name (``""`` when none, e.g. a reshape in the
    model's own forward) and the names of the modules that had finished, in order, and returns the hint.
    """
    names = {id(m): n for n, m in model.named_modules()}
    stack: list[str] = []
    failed: list[str] = []
    done: list[str] = []

    def enter(module: nn.Module, _args: Any) -> None:
        stack.append(names.get(id(module), type(module).__name__))

    def leave(_module: nn.Module, _args: Any, _out: Any) -> None:
        if stack:
            done.append(stack.pop())

    handles = [m.register_forward_pre_hook(enter) for m in model.modules()]
    handles += [m.register_forward_hook(leave) for m in model.modules()]
    try:
        with torch.no_grad():
            return model(example)
    except Exception as exc:  # any failure inside user/torchvision code: report where it happened
        failed = [n for n in stack if n]
        where = f" in module '{failed[-1]}'" if failed else ""
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        advice = hint(failed[-1] if failed else "", done) if callable(hint) else hint
        raise InputError(
            f"{what} fails a forward pass{where} ({type(exc).__name__}: {first}); {advice}"
        ) from exc
    finally:
        for handle in handles:
            handle.remove()


def describe_error(exc: BaseException) -> str:
    """``Type: first line`` of an exception raised inside torch-pruning or user code, for a one-line error."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
