"""ONNX Runtime sessions and the ORT evaluation of an artifact.

Why one helper for session options: the report compares metrics and latencies of files run by ORT, so every
edgekd-side session (parity, evaluation, local profiling) is created the same way: CPU provider, all graph
optimisations, sequential execution with one inter-op thread (conv nets are a chain; extra inter-op threads
only contend for the cores), and ORT's warnings kept off the console. ``edgekd/profile/probe.py`` mirrors
these settings in its own dependency-free copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from edgekd.engine.evaluate import evaluate
from edgekd.errors import InputError
from edgekd.onnxfile import check_onnx_file

if TYPE_CHECKING:
    import onnxruntime as ort

    from edgekd.data.base import DataBundle
    from edgekd.tasks.base import Task

DEFAULT_BATCH = 256
PROVIDERS = ("CPUExecutionProvider",)


def session_options(threads: int | None = None, optimization: str = "all") -> ort.SessionOptions:
    """Session options shared by parity, evaluation and local profiling.

    Args:
        threads: Intra-op threads; ``None`` or ``0`` lets ORT use all physical cores.
        optimization: Graph optimisation level: ``"disable"``, ``"basic"``, ``"extended"`` or ``"all"``.

    >>> session_options(threads=1).intra_op_num_threads
    1
    """
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if optimization not in levels:
        raise ValueError(f"optimization must be one of {sorted(levels)}, got {optimization!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = levels[optimization]
    options.log_severity_level = 3  # errors only: ORT's shape-merge warnings are not the user's business
    return options


def create_session(
    model: Path | bytes, threads: int | None = None, label: str | None = None
) -> ort.InferenceSession:
    """An ORT CPU session for a file path or serialised model bytes.

    Args:
        model: ONNX file or serialised ``ModelProto``.
        threads: Intra-op threads; ``None`` or ``0`` uses all physical cores.
        label: Names the model in error messages (default: the path).

    Raises:
        InputError: ORT cannot load the model (the message is ORT's first line).
    """
    import onnxruntime as ort

    source = str(model) if isinstance(model, Path) else model
    try:
        return ort.InferenceSession(source, sess_options=session_options(threads), providers=list(PROVIDERS))
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NotImplemented types
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        where = label or (model if isinstance(model, Path) else "model")
        raise InputError(f"{where}: ONNX Runtime cannot load it ({first[:200]})") from None


class OrtPredictor:
    """A ``predict(batch) -> first output`` callable over one session, for :func:`edgekd.engine.evaluate`.

    Why a class: the session is created once and reused for every batch (creating one costs more than
    running a small model on a whole eval set). A model exported with a fixed batch size gets its batches
    split and the last chunk padded, so any loader batch size works.
    """

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32  # FP16 artifacts
        first = inp.shape[0] if inp.shape else None
        self.fixed_batch = first if isinstance(first, int) and first > 0 else None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.detach().cpu().numpy().astype(self.input_dtype, copy=False)
        if self.fixed_batch is None:
            return torch.from_numpy(self._run(x))
        step = self.fixed_batch
        outs = []
        for start in range(0, len(x), step):
            chunk = x[start : start + step]
            real = len(chunk)
            if real < step:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - real, axis=0)])
            outs.append(self._run(chunk)[:real])
        return torch.from_numpy(np.concatenate(outs))

    def _run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input_name: x})[0], dtype=np.float32)


def evaluate_session(
    session: ort.InferenceSession, data: DataBundle, task: Task, batch_size: int | None = None
) -> dict[str, float]:
    """Task metrics of ``session`` over the whole eval split, through the shared evaluation loop."""
    return evaluate(OrtPredictor(session), data.eval_loader(batch_size or DEFAULT_BATCH), task)


def evaluate_onnx(
    path: Path, data: DataBundle, task: Task, batch_size: int | None = None, threads: int | None = None
) -> dict[str, float]:
    """Evaluate an ONNX file on the eval split in ONNX Runtime (FP32, FP16 or INT8 artifacts alike).

    Args:
        path: The ONNX file; checked first (missing, corrupt or non-ONNX files raise InputError).
        data: Dataset whose eval split is scored.
        task: Metric definitions (the same code that scores the PyTorch model).
        batch_size: Eval batch size (default 256; fixed-batch models are chunked to their batch size).
        threads: Intra-op threads; ``None`` uses all cores.

    Returns:
        The task's metrics, e.g. ``{"accuracy": 0.91, "top5": 0.99}``.

    Raises:
        InputError: The file is missing, not ONNX, fails the checker, or ORT cannot load it.
    """
    path = Path(path)
    check_onnx_file(path)
    session = create_session(path, threads)
    if len(session.get_inputs()) != 1:
        raise InputError(f"{path}: expected a model with one image input, found {len(session.get_inputs())}")
    return evaluate_session(session, data, task, batch_size)
