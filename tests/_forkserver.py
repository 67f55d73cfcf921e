"""Run ``edgekd`` commands in fresh forked processes of one pre-imported interpreter (the tests' ``cli``).

Why: every CLI test runs the command as a user would, in a process of its own, and most of such a process's
time on a 2-core machine was importing torch, torchvision, ONNX Runtime and torch-pruning again (~5 s each,
dozens of times per suite). A server process imports them once and never runs a torch op (so no thread pool
exists to be corrupted by ``fork``); each command is a ``fork`` of it that sets the caller's working directory,
environment and argv, runs ``edgekd.cli.main`` exactly as ``python -m edgekd`` does, and exits with its status.
Output goes to files the caller reads. ``EDGEKD_TEST_SUBPROCESS=1`` turns the server off (plain subprocesses).

Protocol (one JSON object per line): the caller writes ``{"args", "cwd", "env", "stdout", "stderr"}``; the server
answers ``{"pid"}`` when the command started, then ``{"returncode"}`` when it ended.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import sys
import traceback


def _preload() -> None:
    """Import what commands import, without running any computation."""
    import matplotlib

    matplotlib.use("Agg")
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    import torch  # noqa: F401
    import torch_pruning  # noqa: F401
    import torchvision  # noqa: F401

    import edgekd.cli  # noqa: F401
    import edgekd.run  # noqa: F401


def _child(request: dict) -> None:
    """In the forked process: become ``python -m edgekd ARGS`` and exit with its status (never returns)."""
    code = 1
    try:
        os.setsid()  # its own process group: a timeout kills the command and whatever it started
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        stdin = os.open(os.devnull, os.O_RDONLY)
        out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        for fd, target in ((stdin, 0), (out, 1), (err, 2)):
            os.dup2(fd, target)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115  (the process's own descriptors)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        sys.argv = ["edgekd", *request["args"]]
        sys.path[0] = os.getcwd()  # as `python -m` has it (the server's own entry was this file's folder)
        importlib.invalidate_caches()
        from edgekd.cli import main

        try:
            main()
            code = 0
        except SystemExit as exc:  # what the interpreter would make of it
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:  # an uncaught exception: traceback and status 1, as python prints it
            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()  # logging.shutdown, temporary files: what a normal interpreter exit runs
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve() -> None:
    """Answer requests on stdin until it closes; one command at a time."""
    replies = os.fdopen(os.dup(1), "w")  # the protocol's own descriptor: stray prints go to stderr instead
    os.dup2(2, 1)
    _preload()
    requests = sys.stdin
    for line in requests:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        replies.write(json.dumps({"pid": pid}) + "\n")
        replies.flush()
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")
        replies.flush()


if __name__ == "__main__":
    serve()
