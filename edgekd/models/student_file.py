"""Save and reload a pruned student without pickling code (``student.pt``).

Why: a structurally pruned model no longer matches its builder, so the usual answer is ``torch.save(model)``,
which pickles classes — the file then needs the exact source tree to load, and loading it runs whatever the
pickle says. torch-pruning's own ``tp.state_dict`` also pickles module ``__dict__``s. A student file instead
holds only plain data (str/int/float/bool/None, lists, tuples, dicts, tensors), readable with
``torch.load(weights_only=True)``:

* ``spec`` — the :class:`~edgekd.recipe.schema.ModelSpec` that builds the *unpruned* architecture;
* ``modules`` — for every submodule, its class and its plain attributes from ``vars()`` (``out_channels``,
  ``num_features``, ``in_features``, ``groups``, ``normalized_shape``, …), so whatever torch-pruning rewrote
  is restored without a per-layer-type table;
* ``shapes`` — the shape of every parameter and buffer, including non-persistent ones;
* ``state_dict`` and ``extra_buffers`` (non-persistent buffer values), and free-form ``meta``;
* ``state_versions`` — each module's state-dict format version (``state_dict()._metadata``), which a plain
  dict of tensors drops. Modules that convert older formats in ``_load_from_state_dict`` read it: torchvision's
  MNASNet refuses to load without it ("version should be set to 1 or 2 instead of None").

Loading rebuilds the spec's architecture, writes the recorded attributes back, reshapes parameters and
buffers to the recorded shapes, then loads the weights strictly. ``package.module:factory`` specs import and
run user code, so a file naming one loads only with ``trust=True`` (``torchvision:`` and ``timm:`` specs do not).

>>> save_student("student.pt", pruned, spec, num_classes=10, in_channels=1)   # doctest: +SKIP
>>> model = load_student("student.pt")                                          # doctest: +SKIP
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from edgekd.errors import InputError
from edgekd.io import write_with
from edgekd.models.checkpoint import load_weights
from edgekd.recipe.schema import ModelSpec

FORMAT = "edgekd-student"
VERSION = 1
_PLAIN_SCALARS = (str, int, float, bool, type(None))
_REQUIRED = ("spec", "num_classes", "in_channels", "modules", "shapes", "state_dict")


def save_student(
    path: str | os.PathLike,
    model: nn.Module,
    spec: ModelSpec,
    num_classes: int,
    in_channels: int,
    meta: dict[str, Any] | None = None,
) -> None:
    """Write ``model`` (pruned or not) to ``path`` atomically, as plain data that reloads without its code.

    Args:
        path: destination, usually ``RUN/student.pt``.
        model: the student.
        spec: the spec its *unpruned* architecture was built from.
        num_classes: classes passed to the builder (the spec's own value wins, as in ``build_model``).
        in_channels: input channels passed to the builder.
        meta: plain-data extras (pruning record, versions): nested dicts (str keys), lists, tuples, scalars
            and tensors. Scalar subclasses (numpy floats, str enums) are stored as their built-in value.

    Raises:
        ValueError: ``meta`` holds something that is not plain data (module attributes that are not plain,
            such as enums or callables, are simply not recorded: torch-pruning never rewrites them).
    """
    meta = _plain_meta(dict(meta or {}), "meta")
    state = model.state_dict()
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "torch": str(torch.__version__),  # TorchVersion is a str subclass that weights_only refuses
        "spec": spec.model_dump(mode="json"),
        "num_classes": int(num_classes),
        "in_channels": int(in_channels),
        "modules": {name: _module_record(module) for name, module in model.named_modules()},
        "shapes": _tensor_shapes(model),
        "state_dict": {k: v.detach().cpu().clone() for k, v in state.items()},
        "state_versions": state_versions(state),
        "extra_buffers": _non_persistent_buffers(model),
        "meta": meta,
    }
    write_with(path, lambda tmp: torch.save(payload, tmp))


def load_student(path: str | os.PathLike, trust: bool = False) -> nn.Module:
    """Rebuild the student saved at ``path`` and return it in eval mode, on CPU.

    Args:
        path: a file written by :func:`save_student`.
        trust: allow a ``package.module:factory`` spec, which imports and runs that code. The file itself is
            always read with ``weights_only=True``: pickled objects are refused whatever ``trust`` says.

    Raises:
        InputError: missing, corrupt or truncated file; not a student file; a newer format version; a file
            that would need unpickling code; a factory spec without ``trust``; or an architecture that does
            not rebuild to the recorded one (the message names the first differing modules, keys or shapes).
    """
    p = Path(path)
    data = _read(p)
    spec = _spec(p, data)
    from edgekd.models.build import build_model, runs_user_code  # late: edgekd.models/__init__ imports this

    if runs_user_code(spec.name) and not trust:
        raise InputError(
            f"{p}: the student is built by '{spec.name}', which imports and runs that code; "
            "load it with trust=True only if you trust the file"
        )
    with torch.random.fork_rng(devices=[]):  # building draws random init; leave the caller's RNG alone
        model = build_model(spec, int(data["num_classes"]), int(data["in_channels"]))
    _restore_structure(p, model, data["modules"], data["shapes"], data["state_dict"])
    state = with_versions(data["state_dict"], data.get("state_versions"))
    load_weights(model, state, source=str(p))
    buffers = dict(model.named_buffers())
    for name, value in data.get("extra_buffers", {}).items():
        if name in buffers:
            buffers[name].copy_(value)
    return model.eval()


def read_student_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``meta`` dict stored in a student file, without building the model."""
    return dict(_read(Path(path)).get("meta") or {})


def state_versions(state: dict[str, torch.Tensor]) -> dict[str, dict[str, int]]:
    """``{module prefix: {"version": n}}`` from a state dict's ``_metadata`` (plain data, unlike the OrderedDict)."""
    versions: dict[str, dict[str, int]] = {}
    for prefix, info in getattr(state, "_metadata", {}).items():
        if isinstance(info, dict) and isinstance(info.get("version"), int):
            versions[str(prefix)] = {"version": int(info["version"])}
    return versions


def with_versions(state: dict[str, torch.Tensor], versions: Any) -> dict[str, torch.Tensor]:
    """``state`` carrying ``versions`` as its ``_metadata`` again (files written before it was stored: none,
    and :func:`~edgekd.models.checkpoint.load_weights` then falls back to the freshly built model's own)."""
    if not isinstance(versions, dict) or not versions:
        return state
    restored = OrderedDict(state)
    restored._metadata = OrderedDict(  # type: ignore[attr-defined]  # torch's own convention
        (k, dict(v)) for k, v in versions.items() if isinstance(v, dict)
    )
    return restored


def _read(p: Path) -> dict[str, Any]:
    if not p.is_file():
        raise InputError(f"{p}: student file not found")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "weights_only" in text or "Unsupported global" in text or "Unsupported operand" in text:
            raise InputError(
                f"{p}: refused to load: the file contains pickled objects that could run code, which a "
                "student file never does (rewrite it with edgekd.models.student_file.save_student)"
            ) from None
        raise InputError(f"{p}: corrupt student file ({_first_line(exc)})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, IndexError, KeyError) as exc:
        raise InputError(f"{p}: corrupt or truncated student file ({_first_line(exc)})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{p}: not an edgekd student file (expected one written by save_student)")
    version = data.get("version")
    if not isinstance(version, int) or version < 1:
        raise InputError(f"{p}: corrupt student file (bad format version {version!r})")
    if version > VERSION:
        raise InputError(
            f"{p}: student file format version {version} is newer than this edgekd reads ({VERSION}); "
            "upgrade edgekd"
        )
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise InputError(f"{p}: corrupt student file (missing {', '.join(missing)})")
    malformed = [k for k in ("spec", "modules", "shapes", "state_dict") if not isinstance(data[k], dict)]
    if malformed or not all(isinstance(v, torch.Tensor) for v in data["state_dict"].values()):
        raise InputError(f"{p}: corrupt student file (malformed {', '.join(malformed) or 'state_dict'})")
    return data


def _spec(p: Path, data: dict[str, Any]) -> ModelSpec:
    try:
        return ModelSpec.model_validate(data["spec"])
    except ValidationError as exc:
        raise InputError(f"{p}: corrupt student file (bad model spec: {_first_line(exc)})") from None


def _is_plain(value: Any) -> bool:
    """Exact built-in types only: a subclass (an enum, ``TorchVersion``) pickles by class name."""
    if type(value) in _PLAIN_SCALARS:
        return True
    if type(value) in (list, tuple):
        return all(_is_plain(v) for v in value)
    if type(value) is dict:
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _plain_meta(value: Any, where: str) -> Any:
    """``value`` with scalar subclasses (numpy scalars, str enums) turned into built-ins; else ValueError."""
    if type(value) in _PLAIN_SCALARS:
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    for base in (bool, int, float):  # bool first: it is an int
        if isinstance(value, base):
            return base(value)
    if isinstance(value, str):
        return str.__str__(value)  # the underlying text, even for enums that override __str__
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return _plain_meta(value.item(), where)
    if isinstance(value, list | tuple):
        items = [_plain_meta(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if type(value) is tuple else items  # named tuples become lists
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {str(k): _plain_meta(v, f"{where}.{k}") for k, v in value.items()}
    raise ValueError(
        f"save_student: {where} is a {type(value).__name__}; meta holds only str/int/float/bool/None, "
        "lists, tuples, dicts with str keys and tensors"
    )


def _module_record(module: nn.Module) -> dict[str, Any]:
    """Class name and plain attributes: the structural facts torch-pruning may have rewritten."""
    attrs = {
        key: value
        for key, value in vars(module).items()
        if key != "training" and not key.startswith("__") and _is_plain(value)
    }
    return {"type": _type_name(module), "attrs": attrs}


def _type_name(module: nn.Module) -> str:
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


def _tensor_shapes(model: nn.Module) -> dict[str, list[int] | None]:
    """Shape of every parameter and buffer slot of every module (None for an empty slot such as ``bias``)."""
    shapes: dict[str, list[int] | None] = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        for slots in (module._parameters, module._buffers):
            for key, tensor in slots.items():
                shapes[prefix + key] = None if tensor is None else list(tensor.shape)
    return shapes


def _non_persistent_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    extra = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        for key in module._non_persistent_buffers_set:
            tensor = module._buffers.get(key)
            if tensor is not None:
                extra[prefix + key] = tensor.detach().cpu().clone()
    return extra


def _restore_structure(
    p: Path, model: nn.Module, records: dict[str, Any], shapes: dict[str, Any], state: dict[str, Any]
) -> None:
    """Make the fresh ``model`` structurally identical to the saved one (attributes, shapes, dtypes)."""
    modules = dict(model.named_modules())
    missing = [n for n in records if n not in modules]
    extra = [n for n in modules if n not in records]
    if missing or extra:
        parts = ([f"the file has modules it lacks: {_few(missing)}"] if missing else []) + (
            [f"it has modules the file lacks: {_few(extra)}"] if extra else []
        )
        raise InputError(f"{p}: the model spec no longer builds the saved architecture: {'; '.join(parts)}")
    for name, record in records.items():
        module = modules[name]
        if _type_name(module) != record.get("type"):
            raise InputError(
                f"{p}: the model spec no longer builds the saved architecture: module '{name or '<root>'}' "
                f"is {_type_name(module)}, the file has {record.get('type')}"
            )
        for key, value in record.get("attrs", {}).items():
            if getattr(module, key, _MISSING) != value:
                setattr(module, key, value)
        prefix = f"{name}." if name else ""
        for slots, is_param in ((module._parameters, True), (module._buffers, False)):
            for key, current in list(slots.items()):
                shape = shapes.get(prefix + key)
                if current is None or shape is None:
                    continue
                saved = state.get(prefix + key)
                dtype = saved.dtype if isinstance(saved, torch.Tensor) else current.dtype
                if list(current.shape) == shape and current.dtype == dtype:
                    continue
                fresh = torch.zeros(shape, dtype=dtype)
                slots[key] = nn.Parameter(fresh, requires_grad=current.requires_grad) if is_param else fresh


_MISSING = object()


def _few(items: list[str], n: int = 3) -> str:
    shown = ", ".join(repr(i) for i in items[:n])
    return shown + (f" (+{len(items) - n} more)" if len(items) > n else "")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else exc.__class__.__name__
