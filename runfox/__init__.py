"""runfox: a stateless workflow orchestrator over swappable store and queue backends.

    import runfox as rfx

    backend = rfx.Backend(executor=execute)
    wf = rfx.Workflow.from_yaml(SPEC, backend, inputs={"name": "world"})
    result = wf.run()          # Complete / Halt / Failed / Cancelled
    print(result.outcome)

Layers (each imports only the ones above it): ``spec`` and ``expressions`` (the
definition), ``records`` and ``graph`` (pure transitions), ``backend`` (Backend,
Store, Runner), worker harnesses, and the executor, which is user code.
"""

from __future__ import annotations

from .authoring import BindingError, NoStepContext, Registry, StepContext, context
from .backend import Backend
from .errors import (
    BackendError,
    BackendUnavailable,
    ConflictError,
    CorruptRecord,
    ExpressionError,
    NotJSONError,
    PayloadTooLarge,
    RecordTooLarge,
    RunfoxError,
    SpecError,
    SpecProblem,
    UnknownStepError,
    WorkflowNotFound,
)
from .expressions import evaluate
from .records import StepRecord, WorkflowRecord
from .results import (
    Cancelled,
    Complete,
    Dispatch,
    DispatchJob,
    Failed,
    Halt,
    Ignored,
    Pending,
    StateChangeEvent,
    Terminal,
    WorkResult,
)
from .retry import RetryPolicy
from .schedule import Schedule, ScheduleError, ScheduleExists
from .schedules import ScheduleNotFound, Schedules
from .spec import WorkflowSpec, load_spec
from .status import StepStatus, WorkflowStatus
from .subflows import register_workflow
from .workflow import Rerun, Workflow

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "BindingError",
    "Cancelled",
    "Complete",
    "ConflictError",
    "CorruptRecord",
    "Dispatch",
    "DispatchJob",
    "ExpressionError",
    "Failed",
    "Halt",
    "Ignored",
    "NoStepContext",
    "NotJSONError",
    "PayloadTooLarge",
    "Pending",
    "RecordTooLarge",
    "Registry",
    "Rerun",
    "RetryPolicy",
    "RunfoxError",
    "Schedule",
    "ScheduleError",
    "ScheduleExists",
    "ScheduleNotFound",
    "Schedules",
    "SpecError",
    "SpecProblem",
    "StateChangeEvent",
    "StepContext",
    "StepRecord",
    "StepStatus",
    "Terminal",
    "UnknownStepError",
    "WorkResult",
    "Workflow",
    "WorkflowNotFound",
    "WorkflowRecord",
    "WorkflowSpec",
    "WorkflowStatus",
    "context",
    "evaluate",
    "load_spec",
    "register_workflow",
]
