"""How torch-pruning sees one model, decided once before any probe: what it traces, keeps and updates.

Three things a plain ``tp.pruner.BasePruner(model, example)`` gets wrong on real zoo models, each in a module of
its own and combined here:

* branches only training runs (auxiliary classifiers) are missing from its eval-mode trace
  (:mod:`edgekd.prune.trace`);
* attention layers need head-consistent pruning and their stored sizes updated (:mod:`edgekd.prune.attention`);
* some modules cannot be traced at all (channel shuffles) and are kept at fixed width
  (:mod:`edgekd.prune.opaque`).

The plan holds module *names*: every probe prunes a deep copy, and maps the names onto the copy's modules.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgekd.errors import InputError
from edgekd.prune.attention import AttentionPlan, plan_attention
from edgekd.prune.layers import IGNORE_HINT, ROOT_TYPES, describe_error, forward_or_explain, output_layers
from edgekd.prune.opaque import OpaquePlan, find_untraceable, plan_opaque
from edgekd.prune.trace import both_modes_forward, training_branches, training_only_modules

log = logging.getLogger("edgekd")


@dataclass(frozen=True)
class GraphPlan:
    """What every probe passes to torch-pruning, keeps at full width and fixes up after pruning."""

    heads: tuple[str, ...]  # output layers: their outputs are what the model predicts
    training_only: tuple[str, ...]  # modules only a training-mode forward reaches (traced in both modes)
    attention: AttentionPlan
    opaque: OpaquePlan
    feeders: dict[str, tuple[str, ...]]  # module -> the conv/linear layers whose outputs it reads
    layers: frozenset[str]  # the conv/linear layers pruning may narrow
    widening: tuple[str, ...] = ()  # width-changing grouped convolutions and their feeders (_widening_groups)

    def pruner(
        self, model: nn.Module, example: torch.Tensor, ignored: list[nn.Module], **settings: Any
    ) -> Any:
        """torch-pruning's ``BasePruner`` for the whole copy ``model``: ``settings`` (importance, ratios,
        rounding, steps) plus this plan's tracing forward, attention heads and fixed-width modules.

        ``ignored`` is ``prune.ignored_layers`` (as modules of ``model``); the plan adds its own kept layers.
        """
        import torch_pruning as tp

        modules = dict(model.named_modules())
        forward = both_modes_forward() if self.training_only else None
        return tp.pruner.BasePruner(
            model,
            example,
            ignored_layers=ignored + self.kept(modules) + [modules[n] for n in self.opaque.names],
            **settings,
            **self.attention.pruner_kwargs(modules),
            **self.opaque.pruner_kwargs(modules, forward),
        )

    def kept(self, modules: dict[str, nn.Module]) -> list[nn.Module]:
        """Layers of the copy whose outputs keep their width (on top of ``prune.ignored_layers``)."""
        return [modules[n] for n in (*self.heads, *self.attention.kept, *self.widening)]

    def after_step(self, model: nn.Module, pruner: Any) -> None:
        """After each torch-pruning step: write the pruned sizes into the attention layers."""
        self.attention.update(model, pruner.num_heads)

    def finish(self, model: nn.Module, ignored: list[nn.Module], **settings: Any) -> None:
        """After the last step: prune inside the opaque modules, each traceable child on its own, with
        ``settings`` (the final ratio, one step)."""
        import torch_pruning as tp

        if not self.opaque.names:
            return
        modules = dict(model.named_modules())
        keep = ignored + self.kept(modules)
        attention = self.attention.pruner_kwargs(modules)

        def make(module: nn.Module, example: torch.Tensor, boundary: list[nn.Module]) -> Any:
            return tp.pruner.BasePruner(
                module, example, ignored_layers=boundary + keep, **settings, **attention
            )

        self.opaque.prune_inside(model, make)

    def check(self, model: nn.Module, example: torch.Tensor) -> Any:
        """Forward the pruned ``model`` in eval mode (returned) and, if it has them, with its training branches."""
        out = forward_or_explain(model, example, "the pruned model", self.hint)
        if self.training_only:
            with training_branches(model):
                forward_or_explain(model, example, "the pruned model in training mode", self.hint)
        return out

    def step_hint(self, model: nn.Module, pruner: Any) -> str:
        """What to add to ``prune.ignored_layers`` when a torch-pruning step failed (its errors name no layer):
        the root layers of the groups torch-pruning cannot rank. Ignoring a layer leaves its whole group alone."""
        names = {id(m): n for n, m in model.named_modules()}
        failing: list[str] = []
        try:
            for group in pruner.DG.get_all_groups(pruner.ignored_layers, pruner.root_module_types):
                try:
                    pruner.estimate_importance(group)
                except Exception:  # one of the groups the step fails on
                    failing.append(names.get(id(group[0][0].target.module), ""))
        except Exception:  # a half-pruned graph: no better hint than the general one
            pass
        if not failing or not all(failing):
            return IGNORE_HINT
        return f"it fails on the channels of {len(failing)} group(s): prune.ignored_layers: [{', '.join(failing)}]"

    def hint(self, failed: str, done: list[str]) -> str:
        """What to add to ``prune.ignored_layers`` when the pruned model fails in module ``failed`` (``""``: in
        the model's own forward) after the modules ``done`` ran: the layers feeding the failing one, or else
        the last pruned layer that ran (a reshape by a hard-coded width right after it, typically)."""
        while failed and failed not in self.feeders:
            failed = failed.rpartition(".")[0]
        feeding = self.feeders.get(failed, ())
        if feeding:
            names = ", ".join(feeding[:4]) + (", …" if len(feeding) > 4 else "")
            return f"keep the layers feeding '{failed}' at full width: prune.ignored_layers: [{names}]"
        last = next((name for name in reversed(done) if name in self.layers), None)
        if last is None:
            return IGNORE_HINT
        return f"keep the last layer that ran at full width: prune.ignored_layers: [{last}]"


def plan_graph(model: nn.Module, example: torch.Tensor) -> GraphPlan:
    """Trace ``model`` (eval mode, a copy nobody else uses) and decide how every probe prunes it.

    Raises:
        InputError: torch-pruning cannot trace the model, even with its untraceable submodules kept apart.
    """
    training_only = tuple(training_only_modules(model, example))
    attention = plan_attention(model)
    forward_fn = both_modes_forward() if training_only else None
    opaque = OpaquePlan()
    try:
        graph = _build_graph(model, example, {"forward_fn": forward_fn})
    except Exception as exc:  # torch-pruning raises anything from tracing user code
        opaque = _keep_untraceable_apart(model, example, exc)
        try:
            graph = _build_graph(
                model, example, opaque.pruner_kwargs(dict(model.named_modules()), forward_fn)
            )
        except Exception as again:  # still: the failing operation is outside the modules kept apart
            raise InputError(
                f"torch-pruning cannot trace the model ({describe_error(again)}), even with "
                f"{_few(opaque.names)} kept at full width: the operation it fails on is in the forward of a "
                "module that holds them; no prune.ignored_layers can help"
            ) from again
    if training_only:
        log.info("prune: tracing training-only branches too (%s)", ", ".join(training_only))
    names = {id(m): n for n, m in model.named_modules()}
    heads = tuple(names[id(m)] for m in output_layers(graph) if id(m) in names)
    log.debug("output layers kept at full width: %s", heads)
    layers = frozenset(
        names[id(m)] for m in graph.module2node if isinstance(m, ROOT_TYPES) and id(m) in names
    )
    widening = _widening_groups(graph, names)
    return GraphPlan(heads, training_only, attention, opaque, _feeders(graph, names), layers, widening)


def _widening_groups(graph: Any, names: dict[int, str]) -> tuple[str, ...]:
    """Layers to keep so that no group touches a grouped convolution that changes the width.

    Why: a grouped convolution whose output width differs from its input width (a depthwise channel
    multiplier; FastViT downsamples 48 → 96 with ``groups=48``) has one input channel per group, which
    torch-pruning cannot thin, and its grouped-channel ranking fails on them (``IndexError: index 1 is out of
    bounds``). Keeping the convolution and the layers feeding it leaves both of its groups unpruned.
    """
    kept: list[str] = []
    for module in graph.module2node:
        conv = module if isinstance(module, nn.modules.conv._ConvNd) else None
        if conv is None or conv.groups == 1 or conv.in_channels == conv.out_channels:
            continue
        pruner = graph.get_pruner_of_module(conv)
        group = graph.get_pruning_group(conv, pruner.prune_in_channels, list(range(conv.in_channels)))
        feeding = [d.target.module for d, _ in group if graph.is_out_channel_pruning_fn(d.handler)]
        for layer in (conv, *feeding):
            name = names.get(id(layer))
            if name and isinstance(layer, ROOT_TYPES) and name not in kept:
                kept.append(name)
    return tuple(kept)


def _keep_untraceable_apart(model: nn.Module, example: torch.Tensor, exc: Exception) -> OpaquePlan:
    """The plan that keeps the submodules torch-pruning cannot trace at fixed width, or an InputError."""
    culprits = find_untraceable(model, example)
    if not culprits:
        raise InputError(
            f"torch-pruning cannot trace the model ({describe_error(exc)}), and the operation it fails on is in "
            f"{type(model).__name__}.forward itself, in no submodule edgekd could keep at full width; no "
            "prune.ignored_layers can help: move that operation into a submodule of its own"
        ) from exc
    opaque = plan_opaque(model, example, culprits)
    if not opaque.names:
        raise InputError(
            f"torch-pruning cannot trace {_few(tuple(culprits))} ({describe_error(exc)}); edgekd keeps such "
            "modules at full width only when they are called with one tensor, and these are not; no "
            "prune.ignored_layers can help"
        ) from exc
    log.warning(
        "prune: torch-pruning cannot trace through %s (%s: e.g. a channel shuffle); their input and output "
        "widths are kept, the layers inside them are pruned on their own",
        _few(opaque.names),
        describe_error(exc),
    )
    return opaque


def _build_graph(model: nn.Module, example: torch.Tensor, kwargs: dict[str, Any]) -> Any:
    import torch_pruning as tp

    return tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False, **kwargs)


def _few(names: tuple[str, ...], n: int = 4) -> str:
    return ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


def _feeders(graph: Any, names: dict[int, str]) -> dict[str, tuple[str, ...]]:
    """For every traced module, the conv/linear layers whose outputs reach it through parameter-free ops."""
    feeding: dict[str, tuple[str, ...]] = {}
    for module, node in graph.module2node.items():
        name = names.get(id(module))
        if not name:
            continue
        found: list[str] = []
        stack, seen = list(node.inputs), set()
        while stack:
            current = stack.pop()
            if id(current) in seen:
                continue
            seen.add(id(current))
            if isinstance(current.module, ROOT_TYPES):
                layer = names.get(id(current.module))
                if layer and layer not in found:
                    found.append(layer)
                continue
            stack.extend(current.inputs)
        feeding[name] = tuple(found)
    return feeding
