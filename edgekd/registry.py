"""One registry mechanism for every pluggable kind (models, datasets, importances, losses, targets, tasks).

Why a single class: torchdistill grew five copy-pasted registries that drifted apart; timm shows that one
decorator-based registry, instantiated per kind, is enough. Importing a module registers what it defines, so
adding a method is one file plus one import line in its package ``__init__``.

>>> MODELS = Registry("model")
>>> @MODELS.register("tiny")
... def tiny(): return "built"
>>> MODELS.get("tiny")()
'built'
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from edgekd.errors import InputError

T = TypeVar("T")


def did_you_mean(name: str, options: list[str] | tuple[str, ...]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest option, or ``""`` when nothing is close."""
    close = difflib.get_close_matches(name, list(options), n=5, cutoff=0.6)
    if not close:
        return ""
    # difflib breaks ties by reverse string order ('resnet21' → 'resnet32'); prefer the longer shared prefix.
    best = max(
        close, key=lambda c: (round(difflib.SequenceMatcher(None, name, c).ratio(), 6), _prefix(name, c))
    )
    return f"; did you mean '{best}'?"


def _prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class UnknownNameError(InputError, KeyError):
    """Raised when a recipe names a component that is not registered."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class Registry(Generic[T]):
    """A name → component mapping that refuses duplicates and answers typos with close matches."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator registering a class or function under ``name`` (default: its ``__name__``)."""

        def decorator(obj: T) -> T:
            key = name or getattr(obj, "__name__", None)
            if not key:
                raise ValueError(f"cannot infer a {self.kind} name for {obj!r}; pass one explicitly")
            if key in self._items:
                raise ValueError(f"{self.kind} '{key}' is already registered")
            self._items[key] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """Look ``name`` up; an unknown name raises :class:`UnknownNameError` listing the valid ones."""
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(sorted(self._items))
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, self.names())} (valid: {valid})"
            ) from None

    def unregister(self, name: str) -> T:
        """Remove and return ``name``, e.g. a component a test registered for itself; unknown names raise."""
        component = self.get(name)
        del self._items[name]
        return component

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
