"""Atomic artifacts and the run-directory lock."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from edgekd.errors import InputError
from edgekd.io import TMP_MARK, RunLock, atomic_open, write_json
from edgekd.registry import Registry, UnknownNameError


def test_failed_write_leaves_nothing_under_the_final_name(tmp_path):
    target = tmp_path / "student.onnx"
    with pytest.raises(RuntimeError), atomic_open(target, "wb") as fh:
        fh.write(b"partial")
        raise RuntimeError("killed")
    assert not target.exists() and not list(tmp_path.glob(f"*{TMP_MARK}"))


def test_write_replaces_atomically_with_normal_permissions(tmp_path):
    target = tmp_path / "r.json"
    write_json(target, {"a": 1})
    write_json(target, {"a": 2})
    assert target.read_text().strip().endswith("}") and '"a": 2' in target.read_text()
    assert target.stat().st_mode & 0o044  # readable by group/others like any file the user writes


def test_nan_is_refused_as_invalid_json(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "x.json", {"a": float("nan")})
    assert not (tmp_path / "x.json").exists()


def test_second_run_on_the_same_directory_is_refused_naming_the_holder(tmp_path):
    code = (
        "from edgekd.io import RunLock; import time\n"
        f"with RunLock({str(tmp_path)!r}):\n print('held', flush=True); time.sleep(30)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(InputError, match=f"pid {holder.pid}"), RunLock(tmp_path):
            pass
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 10
    while True:  # the kernel drops a dead holder's lock: a resume is never blocked by a killed run
        try:
            with RunLock(tmp_path):
                break
        except InputError:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_registry_refuses_duplicates_and_suggests():
    reg: Registry = Registry("thing")
    reg.register("alpha")(object)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("alpha")(object)
    with pytest.raises(UnknownNameError, match="did you mean 'alpha'"):
        reg.get("alpah")
