"""Error types that map one-to-one onto the CLI's exit codes (see docs/run-directory.md).

Every error edgekd raises on purpose is an :class:`EdgekdError` whose message is a single line that names what
was wrong and what to do. The CLI prints that line; anything else is a bug and gets a traceback under
``--debug``.
"""

from __future__ import annotations


class EdgekdError(Exception):
    """A runtime failure the user can act on (exit code 1)."""

    exit_code = 1


class InputError(EdgekdError):
    """Bad input: recipe, paths, arguments, checkpoints or data files (exit code 2)."""

    exit_code = 2


class GateError(EdgekdError):
    """A deploy gate (parity, accuracy, latency budget) was not met (exit code 3)."""

    exit_code = 3
