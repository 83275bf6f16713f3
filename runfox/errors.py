"""The exceptions runfox raises.

Every error is rooted at ``RunfoxError`` so a caller can catch the library as a
whole. Errors from drivers (SQLAlchemy, botocore) are translated where they enter
runfox, with the original kept as ``__cause__``::

    RunfoxError
    ├── SpecError (also ValueError)        a workflow definition is invalid
    ├── ExpressionError (also ValueError)  a JSON Logic rule cannot compile or evaluate
    ├── NotJSONError (also ValueError)     a value cannot be stored as JSON
    ├── WorkflowNotFound (also KeyError)   no record under that workflow_execution_id
    ├── UnknownStepError (also KeyError)   a result names a step the workflow lacks
    ├── ConflictError                      a conditional write lost a race
    ├── RecordTooLarge                     a record exceeds what a store can hold
    │   └── PayloadTooLarge                a database's size limit refused a statement
    └── BackendError                       a store or runner failed (unreachable, misconfigured)
        ├── CorruptRecord                  a stored row cannot be decoded
        │   └── PayloadMissing             a payload reference names a missing blob
        └── BackendUnavailable             unreachable for now (outage, lock, full disk)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BackendError",
    "BackendUnavailable",
    "ConflictError",
    "CorruptRecord",
    "ExecutionStateError",
    "ExpressionError",
    "NotJSONError",
    "PayloadMissing",
    "PayloadTooLarge",
    "RecordTooLarge",
    "RunfoxError",
    "SpecError",
    "SpecProblem",
    "UnknownStepError",
    "WorkflowNotFound",
]


class RunfoxError(Exception):
    """Base class of every error raised by runfox."""


@dataclass(frozen=True)
class SpecProblem:
    """One problem found in a workflow definition.

    ``where`` names the place, for example ``steps[2] 'shout'.depends_on``;
    ``message`` says what is wrong there.
    """

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class SpecError(RunfoxError, ValueError):
    """A workflow definition is invalid. ``problems`` lists every problem found."""

    def __init__(self, problems: list[SpecProblem], source: str | None = None,
                 subject: str = "workflow spec") -> None:
        self.problems = list(problems)
        self.source = source
        self.subject = subject
        head = f"invalid {subject}{f' {source}' if source else ''}"
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{head} ({len(self.problems)} problem(s)):\n{lines}")


class ExpressionError(RunfoxError, ValueError):
    """A JSON Logic rule is malformed (unknown operator, bad path) or failed to evaluate."""


class NotJSONError(RunfoxError, ValueError):
    """A value cannot be stored as JSON. ``path`` locates the offending part."""

    def __init__(self, message: str, path: str = "") -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class WorkflowNotFound(RunfoxError, KeyError):
    """No workflow record is stored under the given workflow_execution_id."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else "workflow not found"


class UnknownStepError(RunfoxError, KeyError):
    """A result or operation names a step that the workflow does not have."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown step"


class ExecutionStateError(RunfoxError, ValueError):
    """An operation the execution's status does not allow (a redrive of a running or
    complete execution); nothing was written."""


class ConflictError(RunfoxError):
    """A conditional write found a newer version than the one that was loaded."""


class RecordTooLarge(RunfoxError):
    """A record is larger than the store can hold in one item."""


class BackendError(RunfoxError):
    """A store or runner failed: unreachable, misconfigured or refused."""


class CorruptRecord(BackendError):
    """A stored row or message cannot be decoded. ``key`` names it."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"corrupt record {key!r}: {reason}")


class BackendUnavailable(BackendError):
    """A store or runner cannot be used right now, but may be again later.

    Raised for conditions an operator fixes or that pass by themselves: a
    refused or lost connection, a server restarting or shutting down, too many
    connections, a locked SQLite file, a full disk, a read-only database. The
    worker loop keeps retrying these; a command-line start-up failure exits with
    the backend code. ``reason`` is the cause in a few words (``"connection
    refused"``, ``"disk full"``).
    """

    def __init__(self, message: str, reason: str = "") -> None:
        self.reason = reason
        super().__init__(message)


class PayloadTooLarge(RecordTooLarge):
    """A database refused a statement or value because of a size limit.

    ``backend`` names the database (``"MariaDB"``, ``"PostgreSQL"``,
    ``"SQLite"``), ``limit`` the limit (``"max_allowed_packet is 16 MB"``) and
    ``size`` the size in bytes runfox tried to send, when known. Running the
    same work again fails the same way, so it is not retried.
    """

    def __init__(self, message: str, backend: str = "", limit: str = "",
                 size: int | None = None) -> None:
        self.backend = backend
        self.limit = limit
        self.size = size
        super().__init__(message)


class PayloadMissing(CorruptRecord):
    """A payload reference (``runfox.payloads``) names a blob its store does not hold.

    ``key`` is the blob's key (``sha256:...``); ``reason`` says where it was looked
    for. Loading a record turns this into a ``Defect`` of the field that holds the
    reference; a job or result whose payload is missing raises it.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(key, reason)
        self.args = (f"payload {key} is missing: {reason}",)

    def __str__(self) -> str:
        return str(self.args[0])
