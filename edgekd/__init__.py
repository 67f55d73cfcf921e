"""edgekd: compress a trained PyTorch model for an edge device from one YAML recipe.

Prune structurally (torch-pruning) → recover accuracy by distillation from the unpruned teacher → export ONNX with a
PyTorch↔ONNX Runtime parity gate → profile latency and memory on the target → write a deployable report.

>>> import edgekd
>>> student = edgekd.load_student("runs/quickstart/student.pt")   # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"


def load_student(path, trust: bool = False):  # noqa: ANN001,ANN201  (lazy import keeps `import edgekd` light)
    """Rebuild a pruned, distilled student from ``student.pt`` without unpickling code (see student_file)."""
    from edgekd.models.student_file import load_student as _load

    return _load(path, trust=trust)


__all__ = ["__version__", "load_student"]
