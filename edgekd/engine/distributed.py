"""torch.distributed plumbing for data-parallel distillation: process group, rank helpers, collectives.

Why a module of its own: the trainer, the pipeline and the CLI each need a few facts (am I rank 0? how many
ranks?) and a few collectives (broadcast an object, average a dict of floats), and none of them should know
how the process group is set up. Everything here is a no-op in a single process, so callers never branch on
"distributed or not" themselves.

The process group is started from the environment ``torchrun`` sets (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``/``MASTER_PORT``), whether ``torchrun`` was run by hand or by ``edgekd compress --nproc``.
Backend: gloo when training on the CPU, nccl when training on CUDA (one process per GPU: rank ``LOCAL_RANK``
of a node trains on ``cuda:LOCAL_RANK``, see :mod:`edgekd.engine.device`); ``EDGEKD_DIST_BACKEND`` overrides
it. Every collective times out after ``EDGEKD_DIST_TIMEOUT`` seconds (default 1800), so a rank that stops
answering ends the job with an error instead of a hang.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from edgekd.errors import EdgekdError, InputError

log = logging.getLogger("edgekd")

ENV_BACKEND = "EDGEKD_DIST_BACKEND"
ENV_TIMEOUT = "EDGEKD_DIST_TIMEOUT"
# set by ``edgekd compress --nproc``: workers leave their error line to the launcher instead of printing it
ENV_LAUNCHED = "EDGEKD_LAUNCHED"
BACKENDS = ("gloo", "nccl")
# how gloo and c10d word "another rank went away": an error saying so is a consequence, not a cause
_PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "DistNetworkError", "DistBackendError")
DEFAULT_TIMEOUT_S = 1800.0

T = TypeVar("T")


def requested_world_size() -> int:
    """``WORLD_SIZE`` as ``torchrun`` set it (1 when not launched by torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def is_distributed() -> bool:
    """Whether this process is one of several ranks of an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank: from the process group, else from ``RANK`` (0 in a single process)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0: the only rank that writes files, logs progress and prints results."""
    return rank() == 0


def choose_backend(device_type: str = "cpu") -> str:
    """``EDGEKD_DIST_BACKEND`` if set, else gloo for CPU tensors and nccl for CUDA tensors.

    ``device_type`` is the training device's type (the recipe's ``device``, resolved); nccl only carries
    CUDA tensors, so it is refused for any other.

    Raises:
        InputError: the override names a backend other than gloo or nccl.
    """
    chosen = os.environ.get(ENV_BACKEND, "").strip().lower()
    if not chosen:
        return "nccl" if device_type == "cuda" else "gloo"
    if chosen not in BACKENDS:
        raise InputError(f"{ENV_BACKEND}={chosen!r}: unknown backend; use one of {', '.join(BACKENDS)}")
    if chosen == "nccl" and device_type != "cuda":
        raise InputError(
            f"{ENV_BACKEND}=nccl: training runs on the {device_type} and nccl carries only CUDA tensors; use gloo "
            "(or device: cuda on a GPU machine)"
        )
    return chosen


def collective_timeout() -> datetime.timedelta:
    """How long any collective may wait for the other ranks (``EDGEKD_DIST_TIMEOUT`` seconds)."""
    raw = os.environ.get(ENV_TIMEOUT, "")
    try:
        seconds = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise InputError(f"{ENV_TIMEOUT}={raw!r}: expected a number of seconds") from None
    if seconds <= 0:
        raise InputError(f"{ENV_TIMEOUT}={raw!r}: must be > 0 seconds")
    return datetime.timedelta(seconds=seconds)


@contextlib.contextmanager
def session(device: torch.device | str = "cpu") -> Iterator[None]:
    """Join the process group ``torchrun`` describes for the duration of the block, then leave it.

    ``device`` is this process's training device: its type picks the backend (:func:`choose_backend`), and a
    CUDA device becomes the process's current GPU before nccl starts. Ranks other than 0 log only warnings to
    the console, so the job's console shows one progress stream.

    Raises:
        EdgekdError: the process group cannot be formed (rendezvous failed or timed out).
    """
    if requested_world_size() <= 1 or dist.is_initialized():
        yield
        return
    device = torch.device(device)
    backend, timeout = choose_backend(device.type), collective_timeout()
    if device.type == "cuda":
        torch.cuda.set_device(device)  # nccl's collectives (and broadcast_object) run on the current GPU
    try:
        dist.init_process_group(backend, timeout=timeout)
    except Exception as exc:  # a rendezvous failure surfaces as RuntimeError/DistError/ValueError
        detail = " ".join(str(exc).split())[:300]
        raise EdgekdError(
            f"cannot join the {backend} process group as rank {os.environ.get('RANK')} of "
            f"{requested_world_size()} ({type(exc).__name__}: {detail}); check MASTER_ADDR/MASTER_PORT "
            "and torchrun's rendezvous flags"
        ) from None
    console = [h for h in log.handlers if getattr(h, "_edgekd_console", False)]
    levels = [h.level for h in console]
    if not is_main():
        for handler in console:
            handler.setLevel(max(handler.level, logging.WARNING))
    log.debug(
        "distributed: %d ranks, backend %s, %d threads per rank, training on %s",
        world_size(),
        backend,
        torch.get_num_threads(),
        device,
    )
    try:
        yield
    finally:
        for handler, level in zip(console, levels, strict=True):
            handler.setLevel(level)
        dist.destroy_process_group()


def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` as rank ``src`` holds it, on every rank (pickled; only between ranks of one job)."""
    if not is_distributed():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]  # type: ignore[return-value]


def on_main(compute: Callable[[], T]) -> T:
    """Run ``compute`` on rank 0 only and hand its result to every rank.

    Why: evaluation in edgekd computes task metrics (mIoU, top-5) that are not sums, and rank 0's model is the
    one that is saved; evaluating it once and broadcasting gives every rank the same best-epoch decision.
    """
    return broadcast_object(compute() if is_main() else None)  # type: ignore[arg-type]


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """The mean of each value over all ranks (every rank must pass the same keys in the same order)."""
    if not is_distributed() or not values:
        return values
    keys = list(values)
    on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=on)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    tensor /= world_size()
    return dict(zip(keys, tensor.tolist(), strict=True))


class _TrainStep(nn.Module):
    """The model and the loss's own trainable modules as one module, whose forward is the loss function.

    Why: DDP all-reduces the gradients of the parameters of the module it wraps, and the distillation
    objective's adaptors (e.g. FitNet's 1×1 convs) train with the student. Wrapping both keeps them in step.
    The loss function is held in a list so that it is not registered a second time as a submodule.
    """

    def __init__(self, model: nn.Module, extra: nn.Module | None, compute_loss: Callable[..., Any]) -> None:
        super().__init__()
        self.model = model
        self.extra = extra if extra is not None else nn.Module()
        self._compute_loss = [compute_loss]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._compute_loss[0](*args, **kwargs)


def data_parallel(
    model: nn.Module, extra: nn.Module | None, compute_loss: Callable[..., Any]
) -> Callable[..., Any]:
    """``compute_loss`` with its backward pass averaging gradients over ranks (DDP); itself in one process.

    Building the DDP module broadcasts rank 0's parameters and buffers, so every rank starts from exactly the
    same student and adaptors. Buffers (BatchNorm running statistics) are broadcast from rank 0 before every
    forward. Unused-parameter detection is on when the loss has trainable modules of its own, since a loss
    outside its ``from_epoch``/``until_epoch`` window leaves its adaptor unused for a whole epoch.
    """
    if not is_distributed():
        return compute_loss
    from torch.nn.parallel import DistributedDataParallel

    has_extra = extra is not None and any(p.requires_grad for p in extra.parameters())
    device = next(model.parameters()).device
    step = _TrainStep(model, extra, compute_loss)
    if device.type == "cuda":  # one GPU per process: DDP's single-device mode
        return DistributedDataParallel(step, device_ids=[device.index], find_unused_parameters=has_extra)
    return DistributedDataParallel(step, find_unused_parameters=has_extra)


def record_error(line: str, exit_code: int) -> bool:
    """Leave a rank's one-line error where its launcher reads it; return whether the launcher prints it.

    ``torchrun`` gives each worker a ``TORCHELASTIC_ERROR_FILE``; the JSON written here follows its format
    (so plain ``torchrun`` shows the line in its failure summary) plus the exit code, a precise time, and
    whether the error is a lost connection to another rank (the collective library's own message). With
    these ``edgekd compress --nproc`` reports the rank that failed first and for its own reason: the other
    ranks usually fail, or are stopped, because it did.
    """
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return False
    now = time.time()
    data = {
        "message": {
            "message": line,
            "extraInfo": {
                "timestamp": str(int(now)),
                "edgekd": {
                    "time": now,
                    "exit_code": exit_code,
                    "lost_peer": any(s in line for s in _PEER_LOST),
                },
            },
        }
    }
    try:
        with open(path, "w", encoding="utf-8") as fp:
            json.dump(data, fp)
    except OSError:
        return False
    return os.environ.get(ENV_LAUNCHED) == "1"
