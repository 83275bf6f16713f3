"""What the graph functions return, and the job and result shapes that cross queues.

``advance`` returns one of ``Dispatch``, ``Pending`` or a terminal result
(``Complete``, ``Halt``, ``Failed``, ``Cancelled``). ``on_step_result`` returns
``None`` when a result was applied and the step completed (the last step too:
``Complete`` comes from the next ``advance``), ``Pending`` when the attempt failed
and a retry is scheduled, ``Halt``, ``Failed`` or ``Cancelled`` when the workflow
ended otherwise, or ``Ignored`` when the result was stale (wrong run, step not in progress, workflow
already finished) and changed nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import RunfoxError
from .status import WorkflowStatus

__all__ = [
    "Cancelled",
    "Complete",
    "Dispatch",
    "DispatchJob",
    "Executor",
    "Failed",
    "Halt",
    "Ignored",
    "Pending",
    "Result",
    "StateChangeEvent",
    "Terminal",
    "WorkResult",
    "job_key",
]

#: The executor contract: ``(fn, inputs) -> dict``. It imports nothing of runfox.
#: (Defined here, with the job and result shapes, so that ``runfox.backend`` can
#: name it without importing the workers layer; ``runfox.execution`` re-exports it.)
Executor = Callable[[str, dict[str, Any]], Any]


def job_key(workflow_execution_id: str, step_id: str, run_id: int) -> str:
    """The identity of one dispatch of a step: ``{wf_exec_id}#{step_id}#{run_id}``."""
    return f"{workflow_execution_id}#{step_id}#{run_id}"


@dataclass(frozen=True, slots=True)
class DispatchJob:
    """One claimed step, ready to be executed as ``executor(fn, inputs)``.

    ``(workflow_execution_id, step_id, run_id)`` identifies the job; a runner that
    is given the same job twice keeps one. ``attempt`` counts attempts of this step
    since it was last reset (1 for the first). ``timeout`` is the step's time limit
    in seconds, or ``None``.

    ``delivery`` is how many times the runner has handed this job out, counting
    this time (set when it is claimed; not part of the job's identity). A job
    delivered again after its lease ran out (``delivery > 1``) was held by a worker
    that died or stopped heartbeating.

    ``concurrency_key`` and ``concurrency_limit`` come from the step's
    ``concurrency`` (both ``None`` without one): a runner hands out at most
    ``concurrency_limit`` jobs with the same key at once (see
    ``runfox.backend.runner``). Neither is part of the job's identity.
    """

    workflow_execution_id: str
    step_id: str
    fn: str
    inputs: dict[str, Any]
    run_id: int = 0
    attempt: int = 1
    timeout: float | None = None
    delivery: int = field(default=1, compare=False)
    concurrency_key: str | None = field(default=None, compare=False)
    concurrency_limit: int | None = field(default=None, compare=False)
    # ``key``, made once: a worker looks it up several times per job.
    _key: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_key", job_key(self.workflow_execution_id, self.step_id,
                                                 self.run_id))

    @property
    def key(self) -> str:
        return self._key

    def to_dict(self) -> dict[str, Any]:
        return {
            "workflow_execution_id": self.workflow_execution_id,
            "step_id": self.step_id,
            "fn": self.fn,
            "inputs": self.inputs,
            "run_id": self.run_id,
            "attempt": self.attempt,
            "timeout": self.timeout,
            "delivery": self.delivery,
            **({"concurrency_key": self.concurrency_key,
                "concurrency_limit": self.concurrency_limit}
               if self.concurrency_key is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Any) -> DispatchJob:
        """Rebuild a job from ``to_dict`` output; ``ValueError`` names what is wrong."""
        if not isinstance(data, Mapping):
            raise InvalidJob(f"a job must be a JSON object, got {type(data).__name__}")
        missing = [k for k in ("workflow_execution_id", "step_id", "fn") if k not in data]
        if missing:
            raise InvalidJob(f"job is missing field(s) {', '.join(missing)}")
        for name in ("workflow_execution_id", "step_id", "fn"):
            if not isinstance(data[name], str) or not data[name]:
                raise InvalidJob(f"job field {name!r} must be a non-empty string")
        inputs = data.get("inputs") or {}
        if not isinstance(inputs, dict):
            raise InvalidJob("job field 'inputs' must be an object")
        run_id = data.get("run_id", 0)
        attempt = data.get("attempt", 1)
        if not _is_int(run_id) or run_id < 0:
            raise InvalidJob("job field 'run_id' must be a non-negative integer")
        if not _is_int(attempt) or attempt < 1:
            raise InvalidJob("job field 'attempt' must be a positive integer")
        timeout = data.get("timeout")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
        ):
            raise InvalidJob("job field 'timeout' must be a positive number or null")
        delivery = data.get("delivery", 1)
        if not _is_int(delivery) or delivery < 1:
            raise InvalidJob("job field 'delivery' must be a positive integer")
        key, limit = _concurrency(data)
        return cls(
            workflow_execution_id=data["workflow_execution_id"],
            step_id=data["step_id"],
            fn=data["fn"],
            inputs=inputs,
            run_id=run_id,
            attempt=attempt,
            timeout=timeout,
            delivery=delivery,
            concurrency_key=key,
            concurrency_limit=limit,
        )


def _concurrency(data: Mapping[str, Any]) -> tuple[str | None, int | None]:
    """A job's ``concurrency_key`` and ``concurrency_limit``: both given, or neither."""
    key: Any = data.get("concurrency_key")
    limit: Any = data.get("concurrency_limit")
    if key is None and limit is None:
        return None, None
    if not isinstance(key, str) or not key:
        raise InvalidJob("job field 'concurrency_key' must be a non-empty string")
    if not _is_int(limit) or limit < 1:
        raise InvalidJob("job field 'concurrency_limit' must be a positive integer")
    return key, limit


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class InvalidJob(RunfoxError, ValueError):
    """A queue message is not a runfox job."""


class WorkResult(tuple[str, dict[str, Any]]):
    """A result gathered from a runner.

    Unpacks as the seed's ``(step_id, output)`` pair; ``run_id`` says which dispatch
    produced it (``None`` when the submitter did not say).
    """

    run_id: int | None

    def __new__(cls, step_id: str, output: dict[str, Any], run_id: int | None = None):
        self = super().__new__(cls, (step_id, output))
        self.run_id = run_id
        return self

    @property
    def step_id(self) -> str:
        return self[0]

    @property
    def output(self) -> dict[str, Any]:
        return self[1]

    def __repr__(self) -> str:
        return f"WorkResult(step_id={self[0]!r}, run_id={self.run_id!r}, output={self[1]!r})"

    def __reduce__(self):  # keep run_id across pickling (process pools)
        return (WorkResult, (self[0], self[1], self.run_id))


@dataclass(frozen=True, slots=True)
class StateChangeEvent:
    """Which step's output was merged into the shared state.

    ``step_id`` and ``run_id`` name the attempt, ``fn`` the function it ran
    (``None`` only for an event built without one). A direct
    ``Backend.merge_workflow_state`` call, which no step caused, passes ``None``
    to the callback instead of an event.
    """

    step_id: str
    run_id: int
    fn: str | None = None

    @property
    def op(self) -> str:
        """The seed's name for ``step_id``."""
        return self.step_id


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Steps were claimed; ``jobs`` must be handed to a runner."""

    jobs: list[DispatchJob]


@dataclass(frozen=True, slots=True)
class Pending:
    """Steps are in flight or waiting for a retry; nothing new to dispatch now.

    ``retry_at`` is the epoch time at which the earliest retry becomes due, or
    ``None`` when no retry is waiting.
    """

    retry_at: float | None = None


@dataclass(frozen=True, slots=True)
class Ignored:
    """A result changed nothing, for the reason given (stale, duplicate, finished)."""

    reason: str


class Terminal:
    """Base of the results that end a workflow; each carries ``outcome``."""

    status: ClassVar[WorkflowStatus]
    outcome: Any


@dataclass(frozen=True, slots=True)
class Complete(Terminal):
    """Every step finished; ``outcome`` holds the resolved ``outputs``."""

    outcome: Any = field(default_factory=dict)
    status: ClassVar[WorkflowStatus] = WorkflowStatus.COMPLETE


@dataclass(frozen=True, slots=True)
class Halt(Terminal):
    """A ``halt`` branch fired; ``result`` is its resolved payload."""

    result: Any = field(default_factory=dict)
    status: ClassVar[WorkflowStatus] = WorkflowStatus.HALTED

    @property
    def outcome(self) -> Any:
        return self.result


@dataclass(frozen=True, slots=True)
class Failed(Terminal):
    """A step failed with no attempts left; ``outcome`` says which and why."""

    outcome: Any = field(default_factory=dict)
    status: ClassVar[WorkflowStatus] = WorkflowStatus.FAILED

    @property
    def step_id(self) -> str | None:
        return self.outcome.get("step") if isinstance(self.outcome, dict) else None

    @property
    def error(self) -> Any:
        return self.outcome.get("error") if isinstance(self.outcome, dict) else None


@dataclass(frozen=True, slots=True)
class Cancelled(Terminal):
    """The execution was cancelled; ``outcome`` carries the reason."""

    outcome: Any = field(default_factory=dict)
    status: ClassVar[WorkflowStatus] = WorkflowStatus.CANCELLED


Result = Dispatch | Pending | Complete | Halt | Failed | Cancelled | Ignored | None
