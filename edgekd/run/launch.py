"""``edgekd compress RECIPE --nproc N``: run the same command as N ranks on this machine, through torchrun.

Why torchrun's own entry point (``torch.distributed.run``) rather than a hand-rolled ``multiprocessing`` pool:
its agent already does the rendezvous, sets every rank's environment, watches the workers, and stops the
survivors the moment one rank fails. That makes ``--nproc N`` exactly equivalent to
``torchrun --standalone --nproc-per-node N -m edgekd compress RECIPE`` (the multi-node form).

What this adds: each rank gets ``cores // N`` threads (no oversubscription), the console shows rank 0 only,
and a failure ends the job with one line naming the rank that failed first and its error, with that rank's
exit code (1 runtime, 2 bad input, 3 gate), instead of torchrun's multi-page failure summary.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

from edgekd.engine.distributed import ENV_LAUNCHED
from edgekd.errors import EdgekdError, InputError

_PREFIX = "edgekd: error: "


def worker_argv(argv: Sequence[str], option: str = "--nproc") -> list[str]:
    """The command line without ``--nproc N`` / ``--nproc=N``: what every rank runs."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(f"{option}="):
            out.append(arg)
    return out


def threads_per_rank(nproc: int) -> int:
    """Cores divided among the ranks (at least one each), so N ranks do not oversubscribe the CPU."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // nproc)


def launch(nproc: int, batch_size: int, argv: Sequence[str] | None = None) -> None:
    """Run ``edgekd ARGV`` (default: this process's arguments minus ``--nproc``) as ``nproc`` local ranks.

    Args:
        nproc: number of ranks (processes) on this machine.
        batch_size: the recipe's ``data.batch_size`` (the global batch), which must split evenly.
        argv: the edgekd command line to run on every rank, without the program name.

    Raises:
        InputError: ``nproc`` < 1, a batch that does not split into ``nproc`` equal parts, or ``--nproc``
            used inside an existing torchrun job (exit 2).
        EdgekdError: a rank failed; the message names it and its error; ``exit_code`` is the rank's.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if nproc < 1:
        raise InputError(f"--nproc {nproc}: must be at least 1")
    if "TORCHELASTIC_RUN_ID" in os.environ:
        raise InputError("--nproc: already running under torchrun; use torchrun's --nproc-per-node instead")
    if batch_size % nproc:
        raise InputError(
            f"data.batch_size {batch_size} does not split into {nproc} equal per-process batches; "
            f"use a multiple of {nproc} (it is the global batch per optimizer step)"
        )
    command = worker_argv(sys.argv[1:] if argv is None else argv)
    log_dir = tempfile.mkdtemp(prefix="edgekd-ranks-")
    args = parse_args(
        [
            "--standalone",
            f"--nproc-per-node={nproc}",
            "--max-restarts=0",
            "--monitor-interval=0.2",
            f"--log-dir={log_dir}",
            "--local-ranks-filter=0",
            "-m",
            "edgekd",
            *command,
        ]
    )
    env = {"OMP_NUM_THREADS": str(threads_per_rank(nproc)), ENV_LAUNCHED: "1"}
    try:
        with _environ(env), _quiet_torchelastic():
            run(args)
    except ChildFailedError as exc:
        raise _first_failure(exc.failures) from None
    except SignalException as exc:  # Ctrl-C or a kill of this process: torchrun has stopped the ranks
        raise KeyboardInterrupt(str(exc)) from None
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)


def _first_failure(failures: dict[int, Any]) -> EdgekdError:
    """The error of the rank that failed first and for its own reason.

    When one rank fails, torchrun's agent stops the others with SIGTERM, and a rank waiting on it in a
    collective may first fail with a lost connection; both are consequences. So a rank killed by another
    signal (SIGKILL from the OOM killer, SIGSEGV) or failing with its own error is reported first, the
    earliest such by the time its error was recorded.
    """
    ranked = {rank: _describe(failure) for rank, failure in failures.items()}
    first = min(ranked, key=lambda r: (ranked[r][0], ranked[r][1], r))
    _, _, message, code = ranked[first]
    others = sorted(r for r in ranked if r != first)
    also = f" (also stopped: rank {', '.join(map(str, others))})" if others else ""
    error = EdgekdError(f"rank {first} of the distributed run failed: {message}{also}")
    error.exit_code = code
    return error


def _describe(failure: Any) -> tuple[int, float, str, int]:
    """(0 = a cause, 1 = a consequence; time; message; exit code) of one rank's ``ProcessFailure``."""
    data = failure.error_file_data.get("message") if isinstance(failure.error_file_data, dict) else None
    info = data.get("extraInfo", {}).get("edgekd") if isinstance(data, dict) else None
    if info:
        message = str(data["message"]).removeprefix(_PREFIX)  # type: ignore[index]
        return int(bool(info.get("lost_peer"))), float(info["time"]), message, int(info["exit_code"])
    if failure.exitcode < 0:
        try:
            name = signal.Signals(-failure.exitcode).name
        except ValueError:
            name = f"signal {-failure.exitcode}"
        stopped = -failure.exitcode in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        return int(stopped), float(failure.timestamp), f"killed by {name} (pid {failure.pid})", 1
    message = failure.message if failure.error_file_data else f"exit code {failure.exitcode}"
    return 0, float(failure.timestamp), " ".join(str(message).split())[:300], 1


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the workers (an existing ``OMP_NUM_THREADS`` wins), then restore."""
    previous = {k: os.environ.get(k) for k in values}
    for key, value in values.items():
        if key == "OMP_NUM_THREADS" and previous[key]:
            continue
        os.environ[key] = value
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _quiet_torchelastic() -> Iterator[None]:
    """torchelastic's agent logs its rendezvous and its failure summary; edgekd reports one line instead."""
    logger = logging.getLogger("torch.distributed")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)
