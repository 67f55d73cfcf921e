"""onnxsim as an optional, self-checking step: a failed simplification never blocks an export.

Why optional: onnxsim constant-folds and fuses (it removes the TorchScript exporter's ``Identity`` nodes and
the ``Constant`` nodes of clamps, e.g. 209 → 102 nodes for mobilenet_v2), which helps small runtimes, but the
unsimplified model is already correct and deployable. So any failure — an exception inside onnxsim, or its
own equality check failing on real inputs — falls back to the unsimplified model with a note for the report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from edgekd.export._quiet import quiet
from edgekd.export.onnx_export import INPUT_NAME

if TYPE_CHECKING:
    import onnx


def simplify_model(
    model: onnx.ModelProto, sample: np.ndarray | None = None, atol: float = 1e-5
) -> tuple[onnx.ModelProto, str | None]:
    """Run ``onnxsim.simplify`` and validate the result against the original in ONNX Runtime.

    Args:
        model: The exported model (left unmodified).
        sample: Real input batch for onnxsim's check (``input``); ``None`` lets onnxsim draw 3 random inputs.
        atol: Absolute tolerance of the check (relative tolerance is onnxsim's 1e-4).

    Returns:
        ``(simplified, None)`` on success, otherwise ``(model, note)`` where ``note`` says why the
        unsimplified model is shipped.

    >>> import onnx
    >>> from onnx import TensorProto, helper
    >>> x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3])
    >>> y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3])
    >>> graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "g", [x], [y])
    >>> simplified, note = simplify_model(helper.make_model(graph))
    >>> note is None
    True
    """
    import onnxsim

    failure: str | None = None
    simplified = None
    with quiet("onnxsim.simplify"):
        try:
            if sample is None:
                simplified, ok = onnxsim.simplify(model, check_n=3, check_atol=atol)
            else:
                simplified, ok = onnxsim.simplify(
                    model, check_n=1, input_data={INPUT_NAME: sample}, check_atol=atol
                )
            if not ok:
                failure = f"simplified model does not match the original within atol={atol:g}"
        # onnxsim raises many types (RuntimeError, ValueError, ORT's Fail, its own); every one falls back
        except Exception as exc:
            first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
            failure = f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__
    if failure is not None or simplified is None:
        return model, f"onnxsim failed: {failure}; shipped unsimplified"
    return simplified, None
