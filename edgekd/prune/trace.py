"""Branches that run only in training: trace them too, so pruning keeps them consistent.

Why: torch-pruning builds its dependency graph from one forward pass, and runs it in eval mode
(``DependencyGraph._trace`` calls ``model.eval()``). A layer that only training reaches — GoogLeNet's and
Inception-v3's auxiliary classifiers (``if self.training and self.aux_logits``) — is then missing from the
graph: the layers feeding it are pruned, it keeps its old input width, and the first training step of
distillation crashes ("weight of size [128, 512, 1, 1], expected input[4, 360, 4, 4]"). The fix is to give
torch-pruning a forward that runs both modes (:func:`both_modes_forward`), so every branch either mode reaches
is in the graph, and to check the pruned model in training mode as well as in eval mode.

"Training mode" here is the model's own ``training`` flag with normalisation and dropout layers left in eval
mode (:func:`training_branches`): the branching is what matters for the graph, while a BatchNorm in training
mode would update its running statistics and refuse batch-1 inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

# Layers whose training mode changes values or statistics, never which layers run.
_STAY_IN_EVAL: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.modules.dropout._DropoutNd,
)


@contextmanager
def training_branches(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` with its training-only branches switched on (normalisation and dropout stay in eval mode);
    every module's mode is restored on exit."""
    modes = [(module, module.training) for module in model.modules()]
    model.train()
    for module in model.modules():
        if isinstance(module, _STAY_IN_EVAL):
            module.eval()
    try:
        yield model
    finally:
        for module, mode in modes:
            module.training = mode


def reached_modules(model: nn.Module, example: torch.Tensor, training: bool) -> set[str]:
    """Names of the modules one forward pass runs, in eval mode or with the training branches on."""
    names = {id(m): n for n, m in model.named_modules() if n}
    reached: set[str] = set()

    def record(module: nn.Module, _args: Any) -> None:
        if id(module) in names:
            reached.add(names[id(module)])

    handles = [m.register_forward_pre_hook(record) for m in model.modules()]
    was_training = model.training
    try:
        with torch.no_grad():
            if training:
                with training_branches(model):
                    model(example)
            else:
                model.eval()(example)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return reached


def training_only_modules(model: nn.Module, example: torch.Tensor) -> list[str]:
    """The modules only a training-mode forward reaches (e.g. auxiliary classifiers), outermost first.

    A model whose training-mode forward fails here has none as far as pruning can tell (distillation will
    report that failure in its own words).
    """
    try:
        extra = reached_modules(model, example, True) - reached_modules(model, example, False)
    except Exception:  # any failure inside user code: not this function's to report
        return []
    return sorted(n for n in extra if not any(n.startswith(f"{other}.") for other in extra))


def both_modes_forward() -> Callable[[nn.Module, torch.Tensor], Any]:
    """A torch-pruning ``forward_fn`` whose graph holds both the eval and the training-mode branches.

    torch-pruning traces every tensor in the returned structure; modules both passes run become one node each.
    """

    def forward(model: nn.Module, example: torch.Tensor) -> Any:
        evaluated = model(example)
        with training_branches(model):
            trained = model(example)
        return evaluated, trained

    return forward
