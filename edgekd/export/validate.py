"""Check that a file is a loadable, well-formed ONNX model before anything uses it."""

from __future__ import annotations

import os
from pathlib import Path

from edgekd.errors import InputError


def check_onnx_file(path: str | os.PathLike) -> "onnx.ModelProto":  # noqa: F821
    """Load and ``onnx.checker``-check ``path``; a missing, non-ONNX or corrupt file raises InputError."""
    import onnx
    from google.protobuf.message import DecodeError

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: ONNX file not found")
    try:
        model = onnx.load(str(p))
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise InputError(f"{p}: not a valid ONNX file ({str(exc).splitlines()[0][:160] if str(exc) else 'decode error'})") from None
    if not model.graph.node:
        raise InputError(f"{p}: not a valid ONNX file (empty graph)")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise InputError(f"{p}: ONNX checker rejected the model ({str(exc).splitlines()[0][:160]})") from None
    return model
