"""Capture intermediate features by module name, validated before any training step runs.

torchdistill resolves hooked module paths lazily, so a typo fails at the first forward pass of a long run;
here every name is checked against ``model.named_modules()`` up front and a typo gets a did-you-mean.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from edgekd.errors import InputError
from edgekd.registry import did_you_mean


class FeatureHooks:
    """Forward hooks storing the outputs of named modules in :attr:`features` on every forward pass."""

    def __init__(self, model: nn.Module, names: Iterable[str], role: str = "student") -> None:
        modules = dict(model.named_modules())
        self.features: dict[str, torch.Tensor] = {}
        self._handles = []
        for name in dict.fromkeys(names):
            if name not in modules or not name:
                raise InputError(
                    f"{role} has no module '{name}'{did_you_mean(name, [n for n in modules if n])} "
                    "(feature losses name modules as in model.named_modules())"
                )
            self._handles.append(modules[name].register_forward_hook(self._store(name)))

    def _store(self, name: str):  # noqa: ANN202
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if not isinstance(output, torch.Tensor):
                raise InputError(
                    f"module '{name}' returns {type(output).__name__}; hook a module returning a tensor"
                )
            self.features[name] = output

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
