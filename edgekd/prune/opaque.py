"""Modules torch-pruning cannot trace through: keep their input and output widths, prune what is inside them.

Why: torch-pruning follows channel indices through a reshape by inferring the widths on both sides
(``index_mapping.update_reshape_index_mapping``). ShuffleNet's channel shuffle — ``view(b, 2, c/2, h, w)``,
``transpose``, ``view(b, c, h, w)`` — defeats that (``ZeroDivisionError`` while the graph is built), and it
permutes channels, which none of torch-pruning's index mappings can express (its own torchvision benchmark lists
ShuffleNet as unsupported). No ``prune.ignored_layers`` helps there: ignored layers are still traced.

So edgekd finds the innermost modules whose *own* forward cannot be traced (:func:`find_untraceable`: each
submodule traced alone, on the input it receives in a real forward) and hands every module of those types to
torch-pruning as a customized layer of fixed width (``customized_pruners``; their submodules are not traced).
Its in- and out-channel pruning functions are one and the same, so torch-pruning counts the module as an
output of every group that reaches it, and the group is never pruned (``DependencyGraph.get_all_groups``).
The shuffle therefore sees the channels it always did. The traceable children inside such a module
(ShuffleNet's ``branch1``/``branch2``) are pruned on their own afterwards (:meth:`OpaquePlan.prune_inside`),
at the same channel ratio, with their output layers and the grouped convolutions reading their input kept:
the layers between a block's input and its output shrink, its interface does not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

log = logging.getLogger("edgekd")

# Builds a torch-pruning pruner for (module, example input, layers to keep); prune_inside steps it once.
MakePruner = Callable[[nn.Module, torch.Tensor, list[nn.Module]], Any]
Forward = Callable[[nn.Module, torch.Tensor], Any]  # a torch-pruning forward_fn
_MAX_DEPTH = 3  # how deep prune_inside looks for traceable children of an untraceable one


@dataclass(frozen=True)
class Boundary:
    """One module's first input and its output, as recorded in a real forward pass (batch of one)."""

    example: torch.Tensor
    widths: tuple[int, int]  # (input, output) channels


@dataclass(frozen=True)
class OpaquePlan:
    """Modules kept at fixed width (by name) and the recorded inputs of everything inside them."""

    names: tuple[str, ...] = ()
    boundaries: dict[str, Boundary] = field(default_factory=dict)

    def pruner_kwargs(self, modules: Mapping[str, nn.Module], forward: Forward | None) -> dict[str, Any]:
        """torch-pruning arguments: one fixed-width pruner per opaque module type, and a ``forward_fn``
        (around ``forward``, or a plain call) in which each opaque module's output hangs directly off its
        input: torch-pruning walks the autograd graph backwards, and must not walk into the module."""
        if not self.names:
            return {} if forward is None else {"forward_fn": forward}
        widths = {id(modules[n]): self.boundaries[n].widths for n in self.names}
        pruner = _FixedWidth(widths)
        return {
            "customized_pruners": {type(modules[n]): pruner for n in self.names},
            "forward_fn": _cut_at(self.names, forward),
        }

    def prune_inside(self, model: nn.Module, make_pruner: MakePruner) -> None:
        """Prune the traceable children of every opaque module of ``model``, each on its own."""
        for name in self.names:
            self._prune_children(model.get_submodule(name), name, make_pruner, 0)

    def _prune_children(self, module: nn.Module, name: str, make_pruner: MakePruner, depth: int) -> None:
        for child_name, child in module.named_children():
            full = f"{name}.{child_name}"
            boundary = self.boundaries.get(full)
            if boundary is None or not any(isinstance(m, _ROOTS) for m in child.modules()):
                continue  # never called with one tensor, or nothing in it to prune
            try:
                pruner = make_pruner(child, boundary.example, _kept_at_boundary(child, boundary.example))
            except Exception:  # torch-pruning cannot trace it either: look one level further in
                if depth < _MAX_DEPTH:
                    self._prune_children(child, full, make_pruner, depth + 1)
                continue
            pruner.step()


_ROOTS: tuple[type[nn.Module], ...] = (nn.modules.conv._ConvNd, nn.Linear)


def plan_opaque(model: nn.Module, example: torch.Tensor, names: list[str]) -> OpaquePlan:
    """The plan for keeping ``names`` — and every other module of their types — at fixed width."""
    types = {type(model.get_submodule(n)) for n in names}
    boundaries = record_boundaries(model, example)
    chosen = [
        n for n, m in model.named_modules() if n in boundaries and type(m) in types
    ]  # the ones that run
    outermost = tuple(n for n in chosen if not any(n.startswith(f"{o}.") for o in chosen))
    return OpaquePlan(outermost, boundaries)


def record_boundaries(model: nn.Module, example: torch.Tensor) -> dict[str, Boundary]:
    """The first single-tensor input and the output width of every submodule, from one eval forward."""
    names = {id(m): n for n, m in model.named_modules() if n}
    inputs: dict[str, torch.Tensor] = {}
    found: dict[str, Boundary] = {}

    def before(module: nn.Module, args: tuple[Any, ...]) -> None:
        name = names.get(id(module))
        if name and name not in inputs and len(args) == 1 and isinstance(args[0], torch.Tensor):
            inputs[name] = args[0][:1].detach().clone()

    def after(module: nn.Module, _args: Any, out: Any) -> None:
        name = names.get(id(module))
        if name in inputs and name not in found and isinstance(out, torch.Tensor):
            found[name] = Boundary(inputs[name], (_channels(inputs[name]), _channels(out)))

    handles = [m.register_forward_pre_hook(before) for m in model.modules()]
    handles += [m.register_forward_hook(after) for m in model.modules()]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for handle in handles:
            handle.remove()
    return found


def find_untraceable(model: nn.Module, example: torch.Tensor) -> list[str]:
    """The innermost submodules whose own forward torch-pruning cannot trace, traced one by one.

    Empty when the failure is in no submodule (the model's own forward): nothing edgekd can keep apart.
    """
    boundaries = record_boundaries(model, example)
    found: list[str] = []

    def visit(module: nn.Module, prefix: str) -> None:
        for child_name, child in module.named_children():
            name = f"{prefix}{child_name}"
            boundary = boundaries.get(name)
            if boundary is None or _traces(child, boundary.example):
                continue
            before = len(found)
            visit(child, f"{name}.")
            if len(found) > before:
                continue
            # Every child traces alone. A Sequential has no forward of its own: its children fail together
            # (ShuffleNet's blocks, each shuffle feeding the next one's split); keep its compound children.
            compound = [
                f"{name}.{n}" for n, c in child.named_children() if next(c.children(), None) is not None
            ]
            found.extend(compound if isinstance(child, nn.Sequential) and compound else [name])

    visit(model, "")
    return found


def _traces(module: nn.Module, example: torch.Tensor) -> bool:
    import torch_pruning as tp

    try:
        with torch.enable_grad():
            tp.DependencyGraph().build_dependency(module, example_inputs=example, verbose=False)
    except Exception:  # torch-pruning raises anything from tracing user code
        return False
    return True


def _kept_at_boundary(module: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """Layers of a child pruned on its own that must keep their widths: its output layers (they set the
    width it returns) and the grouped convolutions reading its input (their input is their output)."""
    import torch_pruning as tp

    from edgekd.prune.layers import output_layers

    graph = tp.DependencyGraph().build_dependency(module, example_inputs=example, verbose=False)
    kept = output_layers(graph)
    stack = [node for node in graph.module2node.values() if not node.inputs]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node.module, _ROOTS):
            if getattr(node.module, "groups", 1) > 1:
                kept.append(node.module)
            continue
        stack.extend(node.outputs)
    return kept


def _cut_at(names: tuple[str, ...], forward: Forward | None) -> Forward:
    def traced(model: nn.Module, example: torch.Tensor) -> Any:
        modules = dict(model.named_modules())
        # prepend: runs before torch-pruning's own hook, which records the output's grad_fn as the module
        handles = [modules[n].register_forward_hook(_cut, prepend=True) for n in names]
        try:
            return forward(model, example) if forward is not None else model(example)
        finally:
            for handle in handles:
                handle.remove()

    return traced


def _cut(_module: nn.Module, args: tuple[Any, ...], out: Any) -> Any:
    if len(args) == 1 and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
        return _Boundary.apply(args[0], out.detach())
    return out


class _Boundary(torch.autograd.Function):
    """``out`` (same values) whose only autograd input is ``inp``: the module in between is one node."""

    @staticmethod
    def forward(ctx: Any, inp: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return out.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None]:  # only ever traced, never run
        return None, None


def _channels(tensor: torch.Tensor) -> int:
    """Channel count as torch-pruning reads it: dim 1 of an image tensor, the last dim of token tensors."""
    return int(tensor.shape[1] if tensor.dim() == 4 else tensor.shape[-1])


class _FixedWidth:
    """A torch-pruning layer pruner for opaque modules: reports their widths and never removes a channel.

    Not a ``tp.pruner.BasePruningFunc`` subclass only to keep torch-pruning's import out of module load time;
    torch-pruning calls nothing else on a customized pruner.
    """

    def __init__(self, widths: dict[int, tuple[int, int]]) -> None:
        self.widths = widths

    def prune_out_channels(self, layer: nn.Module, idxs: list[int]) -> nn.Module:
        raise RuntimeError(f"edgekd bug: a fixed-width {type(layer).__name__} was asked to lose channels")

    prune_in_channels = (
        prune_out_channels  # one function: every group reaching the module counts it as an output
    )

    def get_out_channels(self, layer: nn.Module) -> int:
        return self.widths[id(layer)][1]

    def get_in_channels(self, layer: nn.Module) -> int:
        return self.widths[id(layer)][0]

    def get_in_channel_groups(self, layer: nn.Module) -> int:
        return 1

    def get_out_channel_groups(self, layer: nn.Module) -> int:
        return 1
