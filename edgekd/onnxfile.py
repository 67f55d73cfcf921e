"""Check that a file is a loadable, well-formed ONNX model before anything uses it.

Why up front: ONNX Runtime's own load errors are multi-line C++ messages; a truncated copy or a text file
passed as a model should get one line naming the file and what is wrong with it. Why at the bottom layer:
export checks what it wrote and profile checks what it is given, and profiling any ONNX file must not import
torch (``edgekd profile`` on a laptop, ``edgekd targets``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from edgekd.errors import InputError

if TYPE_CHECKING:
    import onnx


def check_onnx_file(path: str | os.PathLike) -> onnx.ModelProto:
    """Load and ``onnx.checker``-check ``path``.

    Args:
        path: The ONNX file.

    Returns:
        The loaded model.

    Raises:
        InputError: The file is missing, is not ONNX (text, truncated, corrupt), has an empty graph or fails
            the ONNX checker.
    """
    import onnx
    from google.protobuf.message import DecodeError

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: ONNX file not found")
    try:
        model = onnx.load(str(p))
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise InputError(
            f"{p}: not a valid ONNX file ({_first_line(exc, 'decode error')}); re-export it"
        ) from None
    if not model.graph.node:
        raise InputError(f"{p}: not a valid ONNX file (empty graph); re-export it")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise InputError(f"{p}: ONNX checker rejected the model ({_first_line(exc, 'invalid')})") from None
    return model


def _first_line(exc: Exception, default: str) -> str:
    return next((line.strip()[:160] for line in str(exc).splitlines() if line.strip()), default)
