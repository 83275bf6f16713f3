"""Status enumerations for steps and workflows.

Values are plain strings (``StrEnum``) so stored records stay readable without
importing runfox. The seed's values (``ready``, ``in_progress``, ``complete``,
``halted``, ``retry``; workflow ``pending``) keep their spelling; ``failed``,
``cancelled`` and ``skipped`` are additions.

Step lifecycle::

    ready ──claim──> in_progress ──ok──> complete
      ^                 │  │  └──halt branch──> halted
      │                 │  └──failed, budget left──> retry ──claim──> in_progress
      └──set branch─────┘──failed, no budget──> failed
    (on halt/fail/cancel of the workflow: ready/retry -> skipped, in_progress -> cancelled)
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["STEP_COLOURS", "StepStatus", "WorkflowStatus"]


class StepStatus(StrEnum):
    READY = "ready"
    IN_PROGRESS = "in_progress"
    COMPLETE = "complete"
    HALTED = "halted"
    RETRY = "retry"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL_STEP


class WorkflowStatus(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETE = "complete"
    HALTED = "halted"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL_WORKFLOW


_TERMINAL_STEP = frozenset(
    {StepStatus.COMPLETE, StepStatus.HALTED, StepStatus.FAILED, StepStatus.CANCELLED,
     StepStatus.SKIPPED}
)
_TERMINAL_WORKFLOW = frozenset(
    {WorkflowStatus.COMPLETE, WorkflowStatus.HALTED, WorkflowStatus.FAILED,
     WorkflowStatus.CANCELLED}
)


#: Fill colours by step status, one palette for every picture of a workflow
#: (``runfox graph`` and the dashboard).
STEP_COLOURS: dict[StepStatus, str] = {
    StepStatus.READY: "#eeeeee",
    StepStatus.IN_PROGRESS: "#fff59d",
    StepStatus.COMPLETE: "#c8e6c9",
    StepStatus.HALTED: "#ffe0b2",
    StepStatus.RETRY: "#bbdefb",
    StepStatus.FAILED: "#ffcdd2",
    StepStatus.CANCELLED: "#e0e0e0",
    StepStatus.SKIPPED: "#f5f5f5",
}
