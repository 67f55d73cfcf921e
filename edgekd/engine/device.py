"""Where training runs: the recipe's ``device`` resolved to a torch device, its precision, and the GPU habits.

Why one module: teacher training, distillation, the distributed process group and the GPU check all need the
same answers (which device does ``auto`` mean here? may fp16 run on it? how does a batch get there?), and a
wrong answer must be one line at start-up, not a CUDA error an hour in. Only training moves: pruning, export,
parity and ONNX Runtime evaluation stay on the CPU, so :func:`~edgekd.engine.trainer.fit` hands its model back
on the CPU, and checkpoints load with ``map_location="cpu"`` (a run killed on a GPU resumes on a CPU).

Recipe::

    device: auto          # auto (CUDA, then MPS, else CPU) | cpu | cuda | cuda:N | mps
    distill: {precision: bf16, compile: false}
    train: {precision: fp32}

Under ``torchrun`` with several processes on a node, ``cuda`` (or ``auto`` finding CUDA) means
``cuda:LOCAL_RANK``: one process per GPU, as nccl requires.

>>> resolve_device("cpu")
device(type='cpu')
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from torch import nn

from edgekd.errors import InputError
from edgekd.recipe.schema import DEVICE_PATTERN, Recipe

log = logging.getLogger("edgekd")

CPU = torch.device("cpu")
DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_USE = "use device: auto or device: cpu"
T = TypeVar("T")


def resolve_device(spec: str = "auto") -> torch.device:
    """The torch device a recipe's ``device`` names on this machine (and, under torchrun, for this process).

    Raises:
        InputError: a malformed value, or a device this machine does not have (one line, naming ``device``).
    """
    spec = spec.strip().lower()
    if not re.fullmatch(DEVICE_PATTERN, spec):
        raise InputError(f"device: {spec!r}: expected auto, cpu, cuda, cuda:N or mps")
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    if spec == "cpu":
        return CPU
    if spec == "mps":
        if not _mps_available():
            raise InputError(f"device: mps: Apple's Metal backend is not available on this machine; {_USE}")
        return torch.device("mps")
    if not torch.cuda.is_available():
        built = f"CUDA {torch.version.cuda}, but no GPU is visible" if torch.version.cuda else "without CUDA"
        raise InputError(
            f"device: {spec}: CUDA is not available on this machine (PyTorch {torch.__version__} built {built}); "
            f"{_USE}"
        )
    return _cuda_index(spec)


def _cuda_index(spec: str) -> torch.device:
    """``cuda:N`` as asked, or for ``cuda`` this process's GPU: ``LOCAL_RANK`` under torchrun, else 0."""
    count = torch.cuda.device_count()
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    if ":" in spec:
        if local_ranks > 1:
            raise InputError(
                f"device: {spec}: {local_ranks} processes on this node would share one GPU; use device: cuda "
                "(process LOCAL_RANK trains on cuda:LOCAL_RANK)"
            )
        index = int(spec.split(":", 1)[1])
    else:
        index = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if index >= count:
        raise InputError(
            f"device: {spec}: cuda:{index} does not exist ({count} CUDA device(s) visible); "
            "use fewer processes per node or another index"
        )
    return torch.device("cuda", index)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


@dataclass(frozen=True)
class TrainDevice:
    """Where and at which precision one training runs, and how a batch gets there.

    Attributes:
        device: the resolved torch device.
        precision: ``fp32``, or ``bf16`` / ``fp16`` autocast around the forward passes (the losses themselves
            run in float32, see :class:`~edgekd.distill.objective.DistillObjective`); fp16 adds a GradScaler.
        compile: ``torch.compile`` the student's training forward (distillation only).
    """

    device: torch.device = field(default=CPU)
    precision: str = "fp32"
    compile: bool = False

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> contextlib.AbstractContextManager:
        """The mixed-precision context for a training forward pass (a no-op at fp32)."""
        dtype = DTYPES[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """fp16's loss scaler (gradients below fp16's range would flush to zero); a pass-through otherwise."""
        enabled = self.precision == "fp16"
        return torch.amp.GradScaler("cuda" if enabled else "cpu", enabled=enabled)

    def batch(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` on the device; from pinned memory and without blocking the host when it is a GPU.

        Why pinned: a copy from pageable memory is staged through a pinned buffer synchronously, so the host
        cannot queue the next kernels while it runs; from pinned memory the copy overlaps the GPU's work.
        """
        if tensor.device == self.device:
            return tensor
        if self.is_cuda and tensor.device.type == "cpu":
            pinned = tensor if tensor.is_pinned() else tensor.pin_memory()
            return pinned.to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def prefetch(self, batches: Iterable[T]) -> Iterator[T]:
        """``batches`` unchanged; on a GPU assembled one ahead in a thread, their tensors in pinned memory.

        Why: the loader gathers, augments and normalises each batch on the host; on a GPU that work would
        otherwise sit between two steps while the GPU idles. The thread overlaps it with the current step
        (torch releases the GIL in its kernels); the order of batches is the loader's. On the CPU the
        batches come straight from the loader (the CPU is busy with the step anyway).
        """
        if not self.is_cuda:
            yield from batches
            return
        source = iter(batches)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgekd-prefetch") as pool:
            upcoming = pool.submit(_next_pinned, source)
            while (batch := upcoming.result()) is not None:
                upcoming = pool.submit(_next_pinned, source)
                yield batch

    def place(self, *modules: nn.Module | None) -> None:
        """Move ``modules`` to the device, and let cuDNN pick its fastest kernels for the fixed input shapes."""
        if self.is_cuda:
            torch.backends.cudnn.benchmark = True  # shapes repeat every step: measured once, reused
        for module in modules:
            if module is not None:
                module.to(self.device)

    def describe(self) -> str:
        """``cuda:0 (NVIDIA H200), bf16``: the line the logs show."""
        name = f" ({torch.cuda.get_device_name(self.device)})" if self.is_cuda else ""
        return f"{self.device}{name}, {self.precision}" + (", compiled" if self.compile else "")


def _next_pinned(source: Iterator[T]) -> T | None:
    """The next item of ``source`` with its CPU tensors pinned (a tuple stays a tuple), or ``None`` at its end."""
    item = next(source, None)
    if item is None:
        return None
    pin = [x.pin_memory() if isinstance(x, torch.Tensor) and x.device.type == "cpu" else x for x in item]
    return type(item)(*pin) if hasattr(item, "_fields") else type(item)(pin)


def training_device(
    spec: str, precision: str = "fp32", compile: bool = False, where: str = "precision"
) -> TrainDevice:
    """Resolve ``spec`` and check that ``precision`` can run there (``where`` names the recipe key in errors).

    Raises:
        InputError: the device is missing, fp16 without CUDA, or bf16 on a GPU without bfloat16 support.
    """
    device = resolve_device(spec)
    if precision not in DTYPES:
        raise InputError(f"{where}: {precision!r}: expected one of {', '.join(DTYPES)}")
    if precision == "fp16" and device.type != "cuda":
        raise InputError(
            f"{where}: fp16 needs a CUDA device (it trains with a GradScaler) and device resolved to {device}; "
            f"use bf16 (autocast runs on the {device.type}) or fp32"
        )
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise InputError(
            f"{where}: bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support; use fp16"
        )
    return TrainDevice(device=device, precision=precision, compile=compile)


def distill_device(recipe: Recipe) -> TrainDevice:
    """Where ``recipe``'s distillation runs (``device``, ``distill.precision``, ``distill.compile``)."""
    cfg = recipe.distill
    return training_device(recipe.device, cfg.precision, cfg.compile, where="distill.precision")


def teacher_device(recipe: Recipe) -> TrainDevice:
    """Where ``edgekd train`` trains ``recipe``'s teacher (``device``, ``train.precision``)."""
    return training_device(recipe.device, recipe.train.precision, where="train.precision")


@contextlib.contextmanager
def placed(modules: Iterable[nn.Module], device: torch.device) -> Iterator[None]:
    """``modules`` on ``device`` for the block, back on the CPU afterwards (also when the block fails).

    Why back: the frozen teachers belong to the run's context, and the stages after distillation (export,
    parity, ONNX Runtime evaluation) use them on the CPU.
    """
    modules = list(modules)
    try:
        for module in modules:
            module.to(device)
        yield
    finally:
        to_cpu(*modules)


def to_cpu(*modules: nn.Module | None) -> None:
    """Move ``modules`` (``None`` skipped) back to the CPU, where everything after training runs."""
    for module in modules:
        if module is not None:
            module.to(CPU)
