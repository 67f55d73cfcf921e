"""Safe checkpoint loading.

Checkpoints load with ``torch.load(weights_only=True)``: a file that needs full unpickling (it could run code) is
refused unless the user opts in with ``trust_checkpoint`` / ``--trust-checkpoint``. Accepted layouts: a plain
state dict, or one under a ``state_dict`` or ``model`` key; a DDP ``module.`` prefix is stripped.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd.errors import InputError

TRUST_HINT = (
    "it needs full unpickling, which can run arbitrary code; if you trust the file, pass --trust-checkpoint "
    "(or set teacher.trust_checkpoint: true)"
)


def load_checkpoint(path: str | os.PathLike, trust: bool = False) -> dict[str, Any]:
    """Load a checkpoint file into a dict, refusing pickled code unless ``trust`` is set."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: checkpoint not found")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise InputError(f"{p}: refused to load checkpoint: {TRUST_HINT}") from None
        raise InputError(f"{p}: corrupt checkpoint ({_first_line(exc)})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise InputError(f"{p}: corrupt or truncated checkpoint ({_first_line(exc)})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{p}: expected a state dict, found {type(obj).__name__}")
    return obj


def extract_state_dict(obj: dict[str, Any], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The tensor mapping inside a checkpoint dict (plain, ``state_dict`` or ``model`` key)."""
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise InputError(
            f"{source}: no tensors found (expected a state dict, or one under 'state_dict'/'model')"
        )
    if all(k.startswith("module.") for k in tensors):
        tensors = {k.removeprefix("module."): v for k, v in tensors.items()}
    return tensors


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> nn.Module:
    """Strictly load ``state`` into ``model``; a mismatch names the first differing keys and shapes."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected {_few(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch {_few(shapes)}")
    if problems:
        raise InputError(f"{source} does not match the model: {'; '.join(problems)}")
    model.load_state_dict(state, strict=True)
    return model


def _few(items: list[str], n: int = 3) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else exc.__class__.__name__
