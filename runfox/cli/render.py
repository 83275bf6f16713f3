"""What the CLI prints: status (text and JSON), execution lists, progress, graphs.

Pure functions of records and specs, plus the small ``Progress`` printer; no
backend access here.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from ..backend.runner import JobState
from ..backend.store import ExecutionSummary
from ..backend.workers import WorkerInfo
from ..payloads import describe, encode, holds_ref, is_ref, make_ref, pack_object
from ..records import WorkflowRecord, item_counts, progress_counts
from ..results import job_key
from ..spec import WorkflowSpec
from ..status import STEP_COLOURS, StepStatus

__all__ = ["Progress", "StepLive", "execution_list", "graph_dot", "graph_mermaid",
           "item_counts", "live_steps", "progress_counts", "status_json", "status_text",
           "workers_json", "workers_text"]

# Fill colours by step status, shared by both graph formats.
COLOURS = STEP_COLOURS


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


# -- live jobs ----------------------------------------------------------------------


@dataclass(frozen=True)
class StepLive:
    """Where the job of an in-progress step is: ``queued`` (waiting for a worker),
    ``running`` (held by a live worker), ``stranded`` (held by a dead worker, or its
    lease ran out and nobody took it yet) or ``unknown`` (the runner cannot say)."""

    state: str
    text: str
    worker: str | None = None
    since: float | None = None
    lease_end: float | None = None
    deliveries: int = 0

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"state": self.state, "detail": self.text}
        if self.worker is not None:
            data["worker"] = self.worker
        if self.since is not None:
            data["since"] = iso(self.since)
        if self.lease_end is not None:
            data["lease_end"] = iso(self.lease_end)
        data["deliveries"] = self.deliveries
        return data


def _clock(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%H:%M:%S")


def live_steps(record: WorkflowRecord, jobs: Mapping[str, JobState],
               workers: Sequence[WorkerInfo], now: float) -> dict[str, StepLive]:
    """Per in-progress step, where its job is, from the runner's ``job_states`` and the
    worker registry's rows (a pure function; ``now`` is the reader's clock)."""
    holders: dict[str, WorkerInfo] = {}
    for info in sorted(workers, key=lambda w: w.heartbeat_at):
        for key in info.jobs:
            holders[key] = info
    found: dict[str, StepLive] = {}
    for step in record.steps.values():
        if step.status is not StepStatus.IN_PROGRESS:
            continue
        key = job_key(record.workflow_execution_id, step.id, step.run_id)
        job = jobs.get(key)
        holder = holders.get(key)
        deliveries = job.deliveries if job is not None else 0
        again = f" (delivery {deliveries})" if deliveries > 1 else ""
        if holder is not None and holder.dead(now) and (
                job is None or job.state in ("running", "queued")):
            # A dead worker's row still lists the job: its lease runs out (or ran
            # out: the runner shows it queued again) and the next claim reports it.
            since = holder.jobs[key]
            lease_end = job.lease_end if job is not None and job.state == "running" else None
            comes = ("the job comes back when its lease ends at " + _clock(lease_end)
                     if lease_end is not None and lease_end > now else
                     "its lease has ended; the next claim reports it lost (WorkerLost) "
                     "and retries it")
            text = (f"worker {holder.id} stopped heartbeating {holder.silent_for(now):.1f}s "
                    f"ago; {comes}")
            found[step.id] = StepLive("stranded", text, holder.id, since, lease_end, deliveries)
        elif holder is not None and (job is None or job.state == "running"):
            since = holder.jobs[key]
            lease_end = job.lease_end if job is not None and job.lease_end is not None \
                else holder.heartbeat_at + holder.lease
            text = (f"held by worker {holder.id} since {_clock(since)}, lease until "
                    f"{_clock(lease_end)}{again}")
            found[step.id] = StepLive("running", text, holder.id, since, lease_end, deliveries)
        elif job is not None and job.state == "running":
            end = f", lease until {_clock(job.lease_end)}" if job.lease_end is not None else ""
            found[step.id] = StepLive("running", f"held by an unregistered worker{end}{again}",
                                      lease_end=job.lease_end, deliveries=deliveries)
        elif job is not None and job.state == "queued":
            text = ("waiting for a worker" if deliveries == 0 else
                    f"the lease of delivery {deliveries} ran out; waiting for a worker to "
                    "take it again (it will be reported lost and retried)")
            found[step.id] = StepLive("queued" if deliveries == 0 else "stranded", text,
                                      deliveries=deliveries)
        elif job is not None:
            found[step.id] = StepLive(job.state, f"result {job.state}; the next transition "
                                      "applies it", deliveries=deliveries)
        else:
            found[step.id] = StepLive("unknown", "no job known to the runner (a sweep "
                                      "re-dispatches a claim left without one)")
    return found


def workers_json(workers: Sequence[WorkerInfo], now: float) -> list[dict[str, Any]]:
    """The ``runfox workers --json`` array."""
    rows = []
    for info in sorted(workers, key=lambda w: w.started_at):
        data = info.to_dict()
        data.update(state="dead" if info.dead(now) else "alive",
                    started_at=iso(info.started_at), heartbeat_at=iso(info.heartbeat_at),
                    silent_for=round(info.silent_for(now), 3),
                    jobs={k: iso(v) for k, v in info.jobs.items()})
        rows.append(data)
    return rows


def workers_text(workers: Sequence[WorkerInfo], now: float) -> str:
    """``runfox workers``: one line per worker, dead ones marked, then their jobs."""
    if not workers:
        return "no workers registered"
    rows = [("ID", "STATE", "PID", "EXECUTOR", "CONC", "STARTED", "LAST BEAT", "JOBS")]
    for info in sorted(workers, key=lambda w: w.started_at):
        rows.append((info.id, "dead" if info.dead(now) else "alive", str(info.pid),
                     info.executor or "-", str(info.concurrency),
                     iso(info.started_at) or "-", f"{info.silent_for(now):.1f}s ago",
                     str(len(info.jobs))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    for info in sorted(workers, key=lambda w: w.started_at):
        lines += [f"  {info.id} holds {key} since {iso(since)}"
                  for key, since in sorted(info.jobs.items())]
    return "\n".join(lines)


# -- status -----------------------------------------------------------------------


def offloaded(value: Any, threshold: int | None) -> dict[str, Any] | None:
    """The reference (key, size, preview) that stands for ``value`` in the store, when
    it is one (``threshold``: the store's offload threshold, ``None`` for none).

    For a value stored whole: workflow inputs, the outcome, a state key. A step's
    output and inputs are packed per top-level key: see ``packed``."""
    if is_ref(value):
        return value  # a reference whose blob is missing
    if threshold is None or value is None or isinstance(value, bool | int | float):
        return None
    blob = encode(value)
    return make_ref(blob) if len(blob) > threshold else None


def _nowhere(key: str, blob: bytes) -> None:
    """``runfox status`` only describes what is stored: nothing is sent."""


def packed(value: Any, threshold: int | None) -> Any:
    """A step's output or inputs as the store keeps them: its large top-level values
    replaced by their references (each one's own blob, which the state key it
    landed in shares), or, when that cannot bring it under ``threshold``, one
    reference for the whole (``payloads.pack_object``, which stores use).

    Worked out from the loaded values and the threshold (the record handed here
    is unpacked), so it names the blobs this runfox writes: the same keys, since
    a blob's key is the hash of its one encoding. A reference whose blob is
    missing, whole or of one key, stays in the loaded record and is shown as it
    is: that is how an older record (schema 10 and before: a large output was
    one whole blob) shows its whole reference. An older record whose whole blob
    is present is described per key too: sizes and previews are right, but the
    keys are those this runfox would store, not its whole blob's."""
    if value is None:
        return None
    return pack_object(value, threshold, _nowhere)


def _refs_in(value: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    """The references in a packed value: ``(where, ref)`` for a whole reference,
    ``(where.key, ref)`` for each top-level key kept by reference."""
    if is_ref(value):
        return [(where, value)]
    if isinstance(value, dict):
        return [(f"{where}.{key}", item) for key, item in value.items() if is_ref(item)]
    return []


def _shown(value: Any, threshold: int | None) -> Any:
    ref = offloaded(value, threshold)
    return value if ref is None else ref


def _payload_lines(record: WorkflowRecord, threshold: int | None) -> list[str]:
    """``runfox status``: one line (size and preview) per value kept by reference;
    a step's output or inputs by top-level key (``steps.a.output.rows``)."""
    found: list[tuple[str, dict[str, Any]]] = []
    for where, value in [("inputs", record.inputs), ("outcome", record.outcome),
                         *((f"state.{k}", v) for k, v in record.state.items())]:
        ref = offloaded(value, threshold)
        if ref is not None:
            found.append((where, ref))
    for step in record.steps.values():
        found += _refs_in(packed(step.inputs, threshold), f"steps.{step.id}.inputs")
        found += _refs_in(packed(step.output, threshold), f"steps.{step.id}.output")
    lines = [f"  {where}: {describe(ref)}" for where, ref in found]
    return ["", "payloads (stored by reference):", *lines] if lines else []


def status_json(record: WorkflowRecord,
                live: Mapping[str, StepLive] | None = None,
                threshold: int | None = None) -> dict[str, Any]:
    """The ``runfox status --json`` object (``job`` on in-progress steps with ``live``).

    A value kept by reference (over the store's offload ``threshold``) is shown
    as its reference: ``{"$runfox_ref": key, "size": bytes, "preview": text}``;
    in a step's output and inputs, each top-level value kept so (``packed``)."""
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
            entry["output"] = packed(step.output, threshold)
        if live is not None and step.id in live:
            entry["job"] = live[step.id].to_dict()
        if step.cached:
            entry["cached"] = True
        if step.items is not None and step.id in record.plan.by_id:
            entry["items"] = item_counts(record, step.id)
        if step.child is not None:
            entry["child"] = step.child
        steps[step.id] = entry
    return {
        "id": record.workflow_execution_id,
        "workflow_id": record.workflow_id,
        "execution_id": record.execution_id,
        "name": record.plan.name,
        "status": record.status.value,
        "outcome": _shown(record.outcome, threshold),
        "version": record.version,
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
        "inputs": _shown(record.inputs, threshold),
        "state": {k: _shown(v, threshold) for k, v in record.state.items()},
        "progress": progress_counts(record),
        "steps": steps,
        **({"parent": record.parent} if record.parent is not None else {}),
    }


def step_detail(record: WorkflowRecord, step_id: str, as_json: bool,
                threshold: int | None = None) -> str:
    """``runfox status ID --step S``: the inputs the step ran with and its output
    (as size and preview when kept by reference, see ``status_json``).

    ``step_id`` may name a map item (``each[3]``). ``UnknownStepError`` for a step the
    spec lacks."""
    if step_id not in record.steps:
        record.plan.known_steps([step_id])
    step = record.steps[step_id]
    data: dict[str, Any] = {"id": record.workflow_execution_id, "step": step_id,
                            "status": step.status.value, "run_id": step.run_id,
                            "attempts": step.attempts,
                            "inputs": packed(step.inputs, threshold),
                            "output": packed(step.output, threshold), "cached": step.cached}
    if step.error is not None:
        data["error"] = step.error
    if step.child is not None:
        data["child"] = step.child
    if as_json:
        return json.dumps(data, indent=2)
    lines = [f"step:     {step_id} ({step.status.value}, run {step.run_id}, "
             f"{step.attempts} attempt(s){', from the cache' if step.cached else ''})",
             "inputs:   " + _packed_text(packed(step.inputs, threshold)),
             "output:   " + _packed_text(packed(step.output, threshold))]
    if step.error is not None:
        lines.append("error:    " + json.dumps(step.error, sort_keys=True))
    if step.child is not None:
        lines.append(f"child:    {step.child}")
    return "\n".join(lines)


def _text(value: Any, threshold: int | None) -> str:
    ref = offloaded(value, threshold)
    return json.dumps(value, sort_keys=True) if ref is None else str(describe(ref))


def _packed_text(value: Any) -> str:
    """A packed output or inputs as text: JSON, with each reference as its description
    (``{"n": 1, "rows": <1.0 MB offloaded (sha256:...): [...>}``)."""
    if is_ref(value):
        return str(describe(value))
    if not holds_ref(value):
        return json.dumps(value, sort_keys=True)
    return "{" + ", ".join(f"{json.dumps(key)}: <{describe(item)}>" if is_ref(item) else
                           f"{json.dumps(key)}: {json.dumps(item, sort_keys=True)}"
                           for key, item in sorted(value.items())) + "}"


def status_text(record: WorkflowRecord, live: Mapping[str, StepLive] | None = None,
                threshold: int | None = None) -> str:
    """A human-readable status: header, one line per step, the outcome.

    With ``live`` (``live_steps``), an in-progress step's STATUS is where its job
    is (queued, running, stranded), and a ``jobs:`` section says by whom and until
    when. Values kept by reference (over the store's offload ``threshold``) are
    listed with their size and a preview under ``payloads``."""
    live = live or {}
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
    if record.parent is not None:
        lines.insert(-1, f"parent:   {record.parent.get('execution')} (step "
                         f"{record.parent.get('step')!r}, run {record.parent.get('run_id')})")
    width = max([len(s.id) for s in record.plan.steps] + [4])
    lines.append(f"{'STEP':<{width}}  {'STATUS':<11}  RUN  ATTEMPTS  ERROR")
    by_id = record.plan.by_id
    for step in record.steps.values():
        if step.id not in by_id:
            continue  # a map item: summed up on its map step's line
        shown = live[step.id].state if step.id in live else step.status.value
        error = ""
        items = item_counts(record, step.id) if step.items is not None else None
        if step.error is not None:
            text = f"{step.error.get('type', '')}: {step.error.get('message', '')}"
            error = text.splitlines()[0][:80] if text else ""
        elif step.cached:
            error = "(from the cache)"
        if items is not None:
            failed = f", {items['failed']} failed" if items["failed"] else ""
            done = f"items {items['settled']}/{items['total']} done{failed}"
            error = f"{done}; {error}" if error else done
        if step.child is not None:
            error = f"child {step.child}" + (f"  {error}" if error else "")
        lines.append(f"{step.id:<{width}}  {shown:<11}  {step.run_id:>3}  "
                     f"{step.attempts:>8}  {error}".rstrip())
    if live:
        lines += ["", "jobs:"]
        lines += [f"  {sid:<{width}}  {info.state:<8}  {info.text}" for sid, info in
                  live.items()]
    lines += _payload_lines(record, threshold)
    if record.status.is_terminal:
        lines += ["", "outcome: " + _text(record.outcome, threshold)]
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


#: Directions ``--rankdir`` takes (Graphviz's names; Mermaid's TB is ``TD``).
RANKDIRS = ("TB", "LR", "BT", "RL")

#: How each kind of branch edge is drawn, for both formats and the legend.
EDGE_KINDS = {
    "set": "dashed, blue: a loop (set resets the target and what follows it)",
    "halt": "dashed, red: a branch that halts the workflow",
    "complete": "dotted, green: a branch that ends the step's loop (complete)",
}


def _branch_edges(plan: WorkflowSpec) -> list[tuple[str, str, str]]:
    """``(from step, to, kind)`` for each branch: ``set`` to each target, ``halt`` to
    the halt node, ``complete`` to each dependent (or the end node)."""
    edges = []
    for step in plan.steps:
        for branch in step.branches:
            if branch.action == "set":
                edges += [(step.id, target, "set") for target in branch.targets]
            elif branch.action == "halt":
                edges.append((step.id, HALT_NODE, "halt"))
            elif branch.action == "complete":
                edges += [(step.id, dep, "complete") for dep in step.dependents or [END_NODE]]
    return list(dict.fromkeys(edges))


HALT_NODE = "__halt__"
END_NODE = "__end__"


def _status_label(record: WorkflowRecord | None, step_id: str) -> str | None:
    if record is None:
        return None
    step = record.steps[step_id]
    extra = f" x{step.attempts}" if step.attempts > 1 else ""
    return f"{step.status.value}{extra}"


def _used_statuses(record: WorkflowRecord) -> list[StepStatus]:
    return sorted({s.status for s in record.steps.values()}, key=list(StepStatus).index)


def graph_mermaid(plan: WorkflowSpec, record: WorkflowRecord | None = None,
                  rankdir: str = "TB") -> str:
    """A Mermaid flowchart of the steps: with ``record``, each node is filled by its
    status and says it (``complete``, ``failed x3``), with a legend; branch edges are
    drawn apart from dependencies (``EDGE_KINDS``)."""
    ids = {step.id: f"s{step.index}" for step in plan.steps}
    ids[HALT_NODE], ids[END_NODE] = "halt_", "end_"
    direction = "TD" if rankdir == "TB" else rankdir
    lines = [f"flowchart {direction}"]
    for step in plan.steps:
        label = f"{step.id}<br/>{step.fn}"
        status = _status_label(record, step.id)
        if status is not None:
            label += f"<br/><i>{status}</i>"
        lines.append(f'    {ids[step.id]}["{label.replace(chr(34), "#quot;")}"]')
    branch = _branch_edges(plan)
    if any(to == HALT_NODE for _, to, _ in branch):
        lines.append(f"    {ids[HALT_NODE]}{{{{halt}}}}")
    if any(to == END_NODE for _, to, _ in branch):
        lines.append(f"    {ids[END_NODE]}([end])")
    for step in plan.steps:
        for dep in step.depends_on:
            lines.append(f"    {ids[dep]} --> {ids[step.id]}")
    styles = {"set": "stroke:#1e88e5,stroke-dasharray:6 4",
              "halt": "stroke:#e53935,stroke-dasharray:6 4",
              "complete": "stroke:#43a047,stroke-dasharray:2 3"}
    link = sum(len(s.depends_on) for s in plan.steps)  # linkStyle counts every edge
    for src, dst, kind in branch:
        lines.append(f"    {ids[src]} -. {kind} .-> {ids[dst]}")
        lines.append(f"    linkStyle {link} {styles[kind]}")
        link += 1
    if record is not None:
        used = _used_statuses(record)
        for status in used:
            lines.append(f"    classDef {status.value} fill:{COLOURS[status]},stroke:#555")
        for status in used:
            members = ",".join(ids[s.id] for s in record.steps.values() if s.status is status)
            lines.append(f"    class {members} {status.value}")
        lines.append("    subgraph legend [legend]")
        for status in used:
            lines.append(f'        legend_{status.value}["{status.value}"]:::{status.value}')
        for kind in sorted({k for _, _, k in branch}):
            lines.append(f'        legend_edge_{kind}["{kind} edge: '
                         f'{EDGE_KINDS[kind].split(": ", 1)[1]}"]')
        lines.append("    end")
    return "\n".join(lines)


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _dot_quote(text: str) -> str:
    return f'"{_dot_escape(text)}"'


_DOT_EDGES = {"set": 'style=dashed, color="#1e88e5", fontcolor="#1e88e5", constraint=false',
              "halt": 'style=dashed, color="#e53935", fontcolor="#e53935"',
              "complete": 'style=dotted, color="#43a047", fontcolor="#43a047"'}


def graph_dot(plan: WorkflowSpec, record: WorkflowRecord | None = None,
              rankdir: str = "TB") -> str:
    """A Graphviz digraph of the steps: with ``record``, filled by status, the status
    written on each node and a legend; branch edges drawn apart (``EDGE_KINDS``)."""
    lines = [f"digraph {_dot_quote(plan.name or plan.workflow_id)} {{",
             f"    rankdir={rankdir};",
             '    node [shape=box, style="rounded,filled", fillcolor="#ffffff"];']
    for step in plan.steps:
        label = _dot_escape(step.id) + "\\n" + _dot_escape(step.fn)  # DOT's line break
        status = _status_label(record, step.id)
        if record is not None and status is not None:
            label += "\\n[" + _dot_escape(status) + "]"
        attrs = [f'label="{label}"']
        if record is not None and status is not None:
            attrs.append(f'fillcolor="{COLOURS[record.steps[step.id].status]}"')
            attrs.append(f"tooltip={_dot_quote(status)}")
        lines.append(f"    {_dot_quote(step.id)} [{', '.join(attrs)}];")
    branch = _branch_edges(plan)
    if any(to == HALT_NODE for _, to, _ in branch):
        lines.append(f'    {_dot_quote(HALT_NODE)} [label="halt", shape=octagon, '
                     'fillcolor="#ffcdd2"];')
    if any(to == END_NODE for _, to, _ in branch):
        lines.append(f'    {_dot_quote(END_NODE)} [label="end", shape=oval];')
    for step in plan.steps:
        for dep in step.depends_on:
            lines.append(f"    {_dot_quote(dep)} -> {_dot_quote(step.id)};")
    for src, dst, kind in branch:
        lines.append(f"    {_dot_quote(src)} -> {_dot_quote(dst)} "
                     f"[label={_dot_quote(kind)}, {_DOT_EDGES[kind]}];")
    if record is not None:
        lines += ["    subgraph cluster_legend {", '        label="legend";',
                  '        style=dashed; color="#999999";']
        previous = None
        for status in _used_statuses(record):
            name = _dot_quote(f"legend_{status.value}")
            lines.append(f'        {name} [label="{status.value}", '
                         f'fillcolor="{COLOURS[status]}"];')
            if previous is not None:
                lines.append(f"        {previous} -> {name} [style=invis];")
            previous = name
        for kind in sorted({k for _, _, k in branch}):
            a, b = _dot_quote(f"legend_{kind}_a"), _dot_quote(f"legend_{kind}_b")
            lines.append(f'        {a} [label="", shape=point]; {b} [label="", shape=point];')
            lines.append(f"        {a} -> {b} [label={_dot_quote(kind)}, {_DOT_EDGES[kind]}];")
        lines.append("    }")
    lines.append("}")
    return "\n".join(lines)
