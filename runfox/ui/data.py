"""What the dashboard's JSON endpoints return: plain dicts built from records.

Pure functions of records, summaries, specs and stored objects; no backend access
and no Flask here, so each shape is tested without a server.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from ..backend.store import ExecutionSummary
from ..records import WorkflowRecord, item_counts, progress_counts
from ..spec import WorkflowSpec
from ..status import STEP_COLOURS as PALETTE
from ..status import StepStatus, WorkflowStatus

__all__ = ["STEP_COLOURS", "dag", "execution_detail", "filter_summaries", "parse_since",
           "plain", "summary_json"]

# Fill colours by step status, by status name (``runfox graph`` uses the same palette).
STEP_COLOURS: dict[str, str] = {status.value: colour for status, colour in PALETTE.items()}


def parse_since(text: str) -> float:
    """``since=``: epoch seconds, or an ISO 8601 time (UTC when it names no zone).

    Raises ``ValueError`` naming the parameter.
    """
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"since: {text!r} is neither epoch seconds nor an ISO 8601 time") \
            from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def workflow_of(summary: ExecutionSummary) -> str:
    """The workflow id part of an execution key (``<workflow_id>#<execution_id>``)."""
    return summary.workflow_execution_id.partition("#")[0]


def summary_json(summary: ExecutionSummary) -> dict[str, Any]:
    return {"id": summary.workflow_execution_id, "workflow_id": workflow_of(summary),
            "name": summary.name, "status": summary.status.value,
            "created_at": summary.created_at, "updated_at": summary.updated_at}


def filter_summaries(summaries: Sequence[ExecutionSummary], *, status: WorkflowStatus | None,
                     workflow: str | None, since: float | None, limit: int
                     ) -> dict[str, Any]:
    """The executions page: ``summaries`` (newest first) matching the filters, at most
    ``limit``, with counts by status over every summary matching ``workflow`` and
    ``since`` (the status filter narrows the list, not the counts), and the workflows
    seen, for the filter's choices."""
    matching = [s for s in summaries
                if (workflow is None or workflow in (workflow_of(s), s.name))
                and (since is None or s.created_at >= since)]
    counts = Counter(s.status.value for s in matching)
    listed = [s for s in matching if status is None or s.status is status]
    workflows = sorted({(workflow_of(s), s.name) for s in summaries})
    return {
        "executions": [summary_json(s) for s in listed[:limit]],
        "counts": {status.value: counts.get(status.value, 0) for status in WorkflowStatus},
        "total": len(matching),
        "workflows": [{"workflow_id": w, "name": n} for w, n in workflows],
    }


def dag(plan: WorkflowSpec) -> dict[str, Any]:
    """The step graph for drawing: ``nodes`` in plan order and ``edges`` as
    ``[from, to, kind]`` node indexes. ``kind`` is ``dep`` (a dependency) or
    ``set`` (a loop branch that resets its target). Nodes carry the kinds of the
    branches the step has (``halt``, ``complete``, ``set``)."""
    index = {step.id: n for n, step in enumerate(plan.steps)}
    nodes = []
    edges: list[list[Any]] = []
    for n, step in enumerate(plan.steps):
        nodes.append({"id": step.id, "fn": step.fn,
                      "branches": sorted({b.action for b in step.branches})})
        edges.extend([index[dep], n, "dep"] for dep in step.depends_on if dep in index)
        for branch in step.branches:
            edges.extend([n, index[t], "set"] for t in branch.targets if t in index)
    return {"nodes": nodes, "edges": edges}


def _step_json(record: WorkflowRecord) -> list[dict[str, Any]]:
    rows = []
    for spec_step in record.plan.steps:
        step = record.steps[spec_step.id]
        rows.append({"id": step.id, "fn": spec_step.fn, "status": step.status.value,
                     "run_id": step.run_id, "attempts": step.attempts,
                     "max_attempts": spec_step.max_attempts,
                     "started_at": step.started_at, "finished_at": step.finished_at,
                     "not_before": step.not_before, "inputs": step.inputs,
                     "output": step.output, "error": step.error, "child": step.child,
                     "items": (item_counts(record, step.id) if spec_step.map is not None
                               else None)})
    return rows


def execution_detail(record: WorkflowRecord) -> dict[str, Any]:
    """One execution: header, progress, every step (plan order) and the graph.

    ``progress`` counts the spec's steps (a map step once); a map step's row has
    ``items`` (its item counts, ``item_counts``), other rows ``items: null``."""
    progress = progress_counts(record)
    return {
        "id": record.workflow_execution_id,
        "workflow_id": record.workflow_id,
        "execution_id": record.execution_id,
        "name": record.plan.name,
        "status": record.status.value,
        "terminal": record.status.is_terminal,
        "outcome": record.outcome,
        "version": record.version,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "inputs": record.inputs,
        "state": record.state,
        "progress": {s.value: progress[s.value] for s in StepStatus},
        "defects": [d.to_dict() for d in record.defects],
        "parent": record.parent,
        "steps": _step_json(record),
        "graph": dag(record.plan),
        "colours": STEP_COLOURS,
    }


def plain(item: Any) -> Any:
    """A stored object (an event, a worker, a schedule) as JSON: its ``to_dict()``,
    its dataclass fields, or itself when it is already a dict."""
    to_dict = getattr(item, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return dataclasses.asdict(item)
    return item


def plain_list(items: Iterable[Any]) -> list[Any]:
    return [plain(item) for item in items]


def schedule_json(schedule: Any) -> dict[str, Any]:
    """A stored schedule without its (large) spec: the workflow it starts instead."""
    item = dict(plain(schedule))
    spec = item.pop("spec", None) or {}
    item["workflow"] = spec.get("name") if isinstance(spec, dict) else None
    return item
