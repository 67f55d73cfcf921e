"""Atomic file output, hashing and the run-directory lock.

Why atomic: compression runs are long and get killed. A reader (a user, CI, ``--resume``) must never find a
truncated ``student.onnx`` under its final name, so every artifact is written to a temporary file in the same
directory, fsynced, then renamed over the final name (rename is atomic on POSIX within one file system).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from edgekd.errors import EdgekdError, InputError

TMP_MARK = ".edgekd-tmp"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed to ``path``.

    Use this for libraries that insist on writing to a path themselves (``torch.save``, ``onnx.save``).
    On any exception the temporary file is removed and the final name is left untouched.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=TMP_MARK, dir=final.parent)
    except OSError as exc:  # a full disk can refuse even the empty temporary (no free inode or dir block)
        if exc.errno in _SPACE_ERRNOS:
            reason = _SPACE_ERRNOS[exc.errno]
            raise EdgekdError(
                f"{reason}: cannot create a file in {final.parent}; {_SPACE_FIXES[reason]}"
            ) from exc
        raise
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts get the user's normal permissions
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException as exc:
        reason = _out_of_space(exc, tmp)
        tmp.unlink(missing_ok=True)
        if reason:
            raise EdgekdError(
                f"{reason} while writing {final}; {_SPACE_FIXES[reason]} and rerun "
                "(nothing was written under that name)"
            ) from exc
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a file for writing that appears under ``path`` only once it is complete."""
    if "w" not in mode:
        raise ValueError("atomic_open is for writing ('w' or 'wb')")
    with atomic_path(path) as tmp, open(tmp, mode, encoding=None if "b" in mode else "utf-8") as fh:
        yield fh


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically. NaN/inf are refused: they are not valid JSON."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_with(path: str | os.PathLike, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and move the result to ``path`` atomically (for torch.save, onnx.save)."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def read_json(path: str | os.PathLike) -> Any:
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{p}: file not found") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{p}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def remove_stale_temporaries(directory: str | os.PathLike) -> None:
    """Delete temporaries a killed run left behind (they never carry a final name)."""
    for stale in Path(directory).rglob(f"*{TMP_MARK}"):
        stale.unlink(missing_ok=True)


# errno -> what to tell the user. EFBIG is RLIMIT_FSIZE (ulimit -f) or the file system's own size limit.
_SPACE_ERRNOS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file size limit reached",
}
_SPACE_FIXES = {
    "disk full": "free some space",
    "disk quota exceeded": "free some of your quota",
    "file size limit reached": "raise the file size limit (ulimit -f)",
}
_PROBE_BYTES = 1 << 20


def _out_of_space(exc: BaseException, tmp: Path) -> str | None:
    """Why a write failed, if it was for lack of space; ``None`` for any other failure.

    Python's own writes raise ``OSError(ENOSPC)``, but writers in C++ do not: ``torch.save`` reports a full disk
    as ``RuntimeError: [enforce fail at inline_container.cc] unexpected pos``. So when the writer failed with
    anything but an edgekd error or an interrupt, ask the file system directly: try to append 1 MiB to the
    temporary file (deleted right after). If that is refused for lack of space, that was the cause.
    """
    seen: BaseException | None = exc
    while seen is not None:  # the OSError may be wrapped (raise ... from exc)
        if isinstance(seen, OSError) and seen.errno in _SPACE_ERRNOS:
            return _SPACE_ERRNOS[seen.errno]
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, EdgekdError | KeyboardInterrupt | SystemExit | GeneratorExit) or not tmp.exists():
        return None
    try:
        with open(tmp, "ab") as fh:
            fh.write(bytes(_PROBE_BYTES))
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as probe:
        return _SPACE_ERRNOS.get(probe.errno or 0)
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a directory be opened for fsync
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class RunLock:
    """An exclusive lock on a run directory, so two runs never write the same artifacts at once.

    Uses ``fcntl.flock`` on ``DIR/.lock``: the kernel drops it when the holder dies, so a killed run never
    leaves a lock that blocks ``--resume``. The holder's pid is written into the file for the error message.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.path = Path(directory) / ".lock"
        self._fh: IO[str] | None = None

    def __enter__(self) -> RunLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise InputError(
                f"{self.path.parent} is in use by a running edgekd (pid {holder}); wait for it or use another --out"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
