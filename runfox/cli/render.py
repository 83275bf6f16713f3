"""What the CLI prints: status (text and JSON), execution lists, progress, graphs.

Pure functions of records and specs, plus the small ``Progress`` printer; no
backend access here.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from ..backend.store import ExecutionSummary
from ..records import WorkflowRecord
from ..spec import WorkflowSpec
from ..status import StepStatus

__all__ = ["Progress", "execution_list", "graph_dot", "graph_mermaid", "status_json",
           "status_text"]

# Fill colours by step status, shared by both graph formats.
COLOURS = {
    StepStatus.READY: "#eeeeee",
    StepStatus.IN_PROGRESS: "#fff59d",
    StepStatus.COMPLETE: "#c8e6c9",
    StepStatus.HALTED: "#ffe0b2",
    StepStatus.RETRY: "#bbdefb",
    StepStatus.FAILED: "#ffcdd2",
    StepStatus.CANCELLED: "#e0e0e0",
    StepStatus.SKIPPED: "#f5f5f5",
}


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def progress_counts(record: WorkflowRecord) -> dict[str, int]:
    counts = {status.value: 0 for status in StepStatus}
    for step in record.steps.values():
        counts[step.status.value] += 1
    counts["total"] = len(record.steps)
    return counts


# -- status -----------------------------------------------------------------------


def status_json(record: WorkflowRecord) -> dict[str, Any]:
    """The ``runfox status --json`` object."""
    steps: dict[str, Any] = {}
    for step in record.steps.values():
        entry: dict[str, Any] = {"status": step.status.value, "run_id": step.run_id,
                                 "attempts": step.attempts,
                                 "started_at": iso(step.started_at),
                                 "finished_at": iso(step.finished_at)}
        if step.not_before is not None:
            entry["not_before"] = iso(step.not_before)
        if step.error is not None:
            entry["error"] = step.error
        if step.output is not None:
            entry["output"] = step.output
        if step.cached:
            entry["cached"] = True
        steps[step.id] = entry
    return {
        "id": record.workflow_execution_id,
        "workflow_id": record.workflow_id,
        "execution_id": record.execution_id,
        "name": record.plan.name,
        "status": record.status.value,
        "outcome": record.outcome,
        "version": record.version,
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
        "inputs": record.inputs,
        "state": record.state,
        "progress": progress_counts(record),
        "steps": steps,
    }


def step_detail(record: WorkflowRecord, step_id: str, as_json: bool) -> str:
    """``runfox status ID --step S``: the inputs the step ran with and its output.

    ``UnknownStepError`` for a step the spec lacks."""
    record.plan.known_steps([step_id])
    step = record.steps[step_id]
    data: dict[str, Any] = {"id": record.workflow_execution_id, "step": step_id,
                            "status": step.status.value, "run_id": step.run_id,
                            "attempts": step.attempts, "inputs": step.inputs,
                            "output": step.output, "cached": step.cached}
    if step.error is not None:
        data["error"] = step.error
    if as_json:
        return json.dumps(data, indent=2)
    lines = [f"step:     {step_id} ({step.status.value}, run {step.run_id}, "
             f"{step.attempts} attempt(s){', from the cache' if step.cached else ''})",
             "inputs:   " + json.dumps(step.inputs, sort_keys=True),
             "output:   " + json.dumps(step.output, sort_keys=True)]
    if step.error is not None:
        lines.append("error:    " + json.dumps(step.error, sort_keys=True))
    return "\n".join(lines)


def status_text(record: WorkflowRecord) -> str:
    """A human-readable status: header, one line per step, the outcome."""
    counts = progress_counts(record)
    lines = [
        f"id:       {record.workflow_execution_id}",
        f"name:     {record.plan.name or '-'}",
        f"status:   {record.status.value}",
        f"progress: {counts['complete']}/{counts['total']} complete",
        f"created:  {iso(record.created_at)}",
        f"updated:  {iso(record.updated_at)}",
        "",
    ]
    width = max([len(s) for s in record.steps] + [4])
    lines.append(f"{'STEP':<{width}}  {'STATUS':<11}  RUN  ATTEMPTS  ERROR")
    for step in record.steps.values():
        error = ""
        if step.error is not None:
            error = f"{step.error.get('type', '')}: {step.error.get('message', '')}"
            error = error.splitlines()[0][:80] if error else ""
        elif step.cached:
            error = "(from the cache)"
        lines.append(f"{step.id:<{width}}  {step.status.value:<11}  {step.run_id:>3}  "
                     f"{step.attempts:>8}  {error}".rstrip())
    if record.status.is_terminal:
        lines += ["", "outcome: " + json.dumps(record.outcome, sort_keys=True)]
    return "\n".join(lines)


def execution_list(summaries: Sequence[ExecutionSummary], as_json: bool) -> str:
    if as_json:
        return json.dumps([{"id": s.workflow_execution_id, "name": s.name,
                            "status": s.status.value, "created_at": iso(s.created_at),
                            "updated_at": iso(s.updated_at)} for s in summaries], indent=2)
    if not summaries:
        return "no executions"
    width = max(len(s.workflow_execution_id) for s in summaries)
    lines = [f"{'ID':<{width}}  {'STATUS':<11}  {'CREATED':<29}  NAME"]
    lines += [f"{s.workflow_execution_id:<{width}}  {s.status.value:<11}  "
              f"{iso(s.created_at):<29}  {s.name}".rstrip() for s in summaries]
    return "\n".join(lines)


# -- progress ---------------------------------------------------------------------


class Progress:
    """Progress on stderr: a redrawn bar on a terminal, plain lines otherwise.

    Plain lines are printed only when the counts change, so a log stays short.
    """

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None,
                 width: int = 30) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.width = width
        self.started = time.monotonic()
        self._last: tuple[int, ...] | None = None
        self._drawn = False

    def update(self, counts: dict[str, int]) -> None:
        total = counts["total"] or 1
        done = counts["complete"]
        key = (done, counts["in_progress"], counts["retry"], counts["failed"])
        elapsed = time.monotonic() - self.started
        summary = (f"{done}/{counts['total']} complete, {counts['in_progress']} running"
                   + (f", {counts['retry']} retrying" if counts["retry"] else "")
                   + (f", {counts['failed']} failed" if counts["failed"] else "")
                   + f" ({elapsed:.1f}s)")
        if self.tty:
            filled = int(self.width * done / total)
            bar = "#" * filled + "." * (self.width - filled)
            self.stream.write(f"\r[{bar}] {summary}\x1b[K")
            self._drawn = True
        elif key != self._last:
            self.stream.write(f"progress: {summary}\n")
        self._last = key
        self.stream.flush()

    def finish(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()


# -- graphs -----------------------------------------------------------------------


def graph_mermaid(plan: WorkflowSpec, record: WorkflowRecord | None = None) -> str:
    """A Mermaid flowchart of the steps, coloured by status when ``record`` is given."""
    ids = {step.id: f"s{step.index}" for step in plan.steps}
    lines = ["flowchart TD"]
    for step in plan.steps:
        label = f"{step.id}<br/>{step.fn}".replace('"', "#quot;")
        lines.append(f'    {ids[step.id]}["{label}"]')
    for step in plan.steps:
        for dep in step.depends_on:
            lines.append(f"    {ids[dep]} --> {ids[step.id]}")
    if record is not None:
        used = sorted({s.status for s in record.steps.values()}, key=list(StepStatus).index)
        for status in used:
            lines.append(f"    classDef {status.value} fill:{COLOURS[status]},stroke:#555")
        for status in used:
            members = ",".join(ids[s.id] for s in record.steps.values() if s.status is status)
            lines.append(f"    class {members} {status.value}")
    return "\n".join(lines)


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _dot_quote(text: str) -> str:
    return f'"{_dot_escape(text)}"'


def graph_dot(plan: WorkflowSpec, record: WorkflowRecord | None = None) -> str:
    """A Graphviz digraph of the steps, filled by status when ``record`` is given."""
    lines = [f"digraph {_dot_quote(plan.name or plan.workflow_id)} {{",
             "    rankdir=TB;",
             '    node [shape=box, style="rounded,filled", fillcolor="#ffffff"];']
    for step in plan.steps:
        label = _dot_escape(step.id) + "\\n" + _dot_escape(step.fn)  # DOT's line break
        attrs = [f'label="{label}"']
        if record is not None:
            status = record.steps[step.id].status
            attrs.append(f'fillcolor="{COLOURS[status]}"')
            attrs.append(f"tooltip={_dot_quote(status.value)}")
        lines.append(f"    {_dot_quote(step.id)} [{', '.join(attrs)}];")
    for step in plan.steps:
        for dep in step.depends_on:
            lines.append(f"    {_dot_quote(dep)} -> {_dot_quote(step.id)};")
    lines.append("}")
    return "\n".join(lines)
