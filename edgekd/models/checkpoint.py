"""Safe checkpoint loading.

Checkpoints load with ``torch.load(weights_only=True)``: a file that needs full unpickling (it could run code) is
refused unless the user opts in with ``trust_checkpoint`` / ``--trust-checkpoint``. Accepted layouts: a plain
state dict, or one under a ``state_dict`` or ``model`` key; a DDP ``module.`` prefix is stripped.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd.errors import InputError

TRUST_HINT = (
    "loading it needs full unpickling, which can run arbitrary code; if you trust the file, pass "
    "--trust-checkpoint (or set teacher.trust_checkpoint: true)"
)


def load_checkpoint(path: str | os.PathLike, trust: bool = False) -> dict[str, Any]:
    """Load a checkpoint file into a dict, refusing pickled code unless ``trust`` is set."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: checkpoint not found")
    with open(p, "rb") as fh:
        head = fh.read(4)
    if not (head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_PROTO)):
        raise InputError(
            f"{p}: not a PyTorch checkpoint (neither a torch.save archive nor a pickle); check the path"
        )
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_PROTOCOL_WARNING, category=UserWarning)
            obj = torch.load(p, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        raise InputError(_unpickling_refusal(p, str(exc))) from None
    except Exception as exc:  # arbitrary bytes make the unpickler raise anything (IndexError, …)
        raise InputError(f"{p}: corrupt or truncated checkpoint ({_first_line(exc)})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{p}: expected a state dict, found {type(obj).__name__}")
    return obj


# torch's safe unpickler warns (several lines, on stderr) about any pickle protocol but 2, before it refuses a
# plain pickle that needs full unpickling; edgekd's one-line refusal says what matters, so that warning alone is
# silenced, and only around edgekd's own load.
_PROTOCOL_WARNING = r"Detected pickle protocol \d+ in the checkpoint"
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format since 1.6
_PICKLE_PROTO = b"\x80"  # PROTO opcode: legacy torch.save files and plain pickles start with it
_GLOBAL = re.compile(r"GLOBAL (\S+) was not an allowed global")
_WEIGHTS_ERROR = re.compile(r"WeightsUnpickler error:\s*(.+?)\s*(?:Check the documentation|$)", re.S)


def _unpickling_refusal(p: Path, text: str) -> str:
    """One line for a ``weights_only`` refusal: which global it would import, or why the bytes were refused.

    torch's own message always says "re-run with weights_only=False", even for a damaged file; repeating that
    would talk users into unpickling garbage (or worse), so the line names what the file actually asked for.
    """
    named = _GLOBAL.search(text)
    if named:
        return f"{p}: refused to load checkpoint: it references {named.group(1)}, and {TRUST_HINT}"
    detail = _WEIGHTS_ERROR.search(text)
    reason = " ".join(detail.group(1).split())[:160] if detail else _first_line(Exception(text))
    return (
        f"{p}: the safe loader cannot read this checkpoint ({reason}): it is corrupt, or a plain pickle that "
        "needs full unpickling, which can run code; only if you trust the file, pass --trust-checkpoint"
    )


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
    versions = getattr(obj, "_metadata", None)
    if all(k.startswith("module.") for k in tensors):
        tensors = {k.removeprefix("module."): v for k, v in tensors.items()}
        versions = versions and {
            ("" if k == "module" else k.removeprefix("module.")): v for k, v in versions.items()
        }
    if versions:  # each module's state-dict format version: see load_weights
        tensors = OrderedDict(tensors)
        tensors._metadata = versions  # type: ignore[attr-defined]  # torch's own convention
    return tensors


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> nn.Module:
    """Strictly load ``state`` into ``model``; a mismatch names the first differing keys and shapes.

    A ``state`` without ``_metadata`` (module state-dict format versions; any plain dict of tensors) is read as
    written by the current code, the model's own versions: modules that convert older formats in
    ``_load_from_state_dict`` otherwise fail (torchvision's MNASNet: "version should be set to 1 or 2").
    """
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
    if getattr(state, "_metadata", None) is None:
        state = OrderedDict(state)
        state._metadata = expected._metadata  # type: ignore[attr-defined]
    model.load_state_dict(state, strict=True)
    return model


def _few(items: list[str], n: int = 3) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else exc.__class__.__name__
