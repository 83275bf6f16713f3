"""The exit codes of ``runfox``, relied on by scripts (documented in the README).

======  ==========================================================================
code    meaning
======  ==========================================================================
0       success; for ``run``: the workflow completed
1       ``run``: the workflow failed or was cancelled; ``start``: it failed
        before its first jobs ran (a first step whose inputs do not resolve)
2       bad usage or input: invalid spec or inputs, unknown executor, unknown
        execution id, malformed option
3       ``run``: the workflow halted (a ``halt`` branch fired)
4       the backend is unreachable or misconfigured (missing driver, refused
        connection, unusable schema)
5       ``run --timeout``: time ran out; the execution is left as it is
130     interrupted (SIGINT) before the command finished
======  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "EXIT_BACKEND",
    "EXIT_COMPLETE",
    "EXIT_FAILED",
    "EXIT_HALTED",
    "EXIT_INTERRUPTED",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "UsageError",
]

EXIT_COMPLETE = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_HALTED = 3
EXIT_BACKEND = 4
EXIT_TIMEOUT = 5
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A command-line mistake; ``main`` prints it and exits with 2.

    The message is one line; ``details`` (candidates, problems), when given, are
    printed one per indented line under it.
    """

    def __init__(self, message: str, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.details = tuple(details)
