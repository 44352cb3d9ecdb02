"""The errors naf-export raises on purpose, and the one place that turns them into exit codes.

Imports nothing heavy, so runners (which raise these) work without torch.

| exit | meaning |
|---|---|
| 0 | done (``validate``: every check passed) |
| 1 | the artifact ran but failed a check: a ``validate`` threshold was missed, or its output is NaN/Inf where PyTorch's is finite |
| 2 | bad input: an argument, file, artifact or plugin that cannot be used; the message names it and the expected form |
| 3 | the target's runtime is not installed here (e.g. TensorRT); the artifacts built without it are kept |
| 4 | internal error: a bug in naf-export (the traceback is printed; please report it) |
| 130 | interrupted (Ctrl-C) |

Every failed run leaves its output folder as it was (see :mod:`naf_export.outdir`).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable

__all__ = [
    "EXIT_BAD_INPUT", "EXIT_CHECK_FAILED", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_UNAVAILABLE",
    "ArtifactError", "CheckFailed", "TargetUnavailable", "exit_code", "run_command",
]

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130


class TargetUnavailable(RuntimeError):
    """A target's runtime is not installed here; the message says what to install. Targets raise
    it only after building every artifact they can without that runtime, and attach the report
    of those (``report``), which the output folder then receives."""

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


class ArtifactError(ValueError):
    """An artifact that loads but cannot run: its runtime failed on it (out-of-range index tables,
    a bad attribute, an engine for another GPU, ...). The message names the artifact."""


class CheckFailed(RuntimeError):
    """The artifact ran, but its output failed a check (a validate threshold, or NaN/Inf where the
    PyTorch reference is finite)."""


def _out_of_memory(exc: BaseException) -> bool:
    # PyTorch's CPU allocator raises RuntimeError, numpy a MemoryError subclass.
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and ("not enough memory" in str(exc) or "out of memory" in str(exc)))


def exit_code(exc: BaseException) -> int:
    """The exit status for an exception that ended a command (table in the module doc)."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, CheckFailed):
        return EXIT_CHECK_FAILED
    if isinstance(exc, TargetUnavailable):
        return EXIT_UNAVAILABLE
    if isinstance(exc, (ValueError, OSError)) or _out_of_memory(exc):
        return EXIT_BAD_INPUT
    return EXIT_INTERNAL


def run_command(prog: str, command: Callable[[], int]) -> int:
    """Run a command-line entry point; print a failure as one line naming what was wrong and
    return its exit status (a traceback only for internal errors)."""
    try:
        return command()
    except BaseException as exc:  # noqa: BLE001 - every failure gets its documented status
        if isinstance(exc, SystemExit):
            raise
        code = exit_code(exc)
        if code == EXIT_INTERRUPTED:
            print(f"{prog}: interrupted", file=sys.stderr)
        elif code == EXIT_INTERNAL:
            traceback.print_exc()
            print(f"{prog}: internal error ({type(exc).__name__}: {exc}); this is a bug in naf-export, "
                  "please report it with the command line and the traceback above", file=sys.stderr)
        elif code == EXIT_UNAVAILABLE:
            print(f"{prog}: not available here: {exc}", file=sys.stderr)
        elif code == EXIT_CHECK_FAILED:
            print(f"{prog}: check failed: {exc}", file=sys.stderr)
        elif _out_of_memory(exc):
            print(f"{prog}: error: out of memory ({exc}); choose smaller sizes or a machine with more memory",
                  file=sys.stderr)
        else:
            print(f"{prog}: error: {exc}", file=sys.stderr)
        return code
