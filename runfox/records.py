"""Workflow and step records: immutable data with a lossless JSON form.

Records are never mutated. A transition builds a new ``WorkflowRecord`` that
shares everything it did not change with the old one, which is what keeps the
cost of applying one step result independent of the size of the workflow:

- ``StepMap`` stores step records in fixed-size chunks; replacing one step copies
  one chunk of 64 and the tuple of chunk references, never the whole map.
- Three derived fields are carried from record to record instead of being
  recomputed: ``ready`` (the steps whose dependencies are all settled and that
  wait to be dispatched), ``open`` (how many steps are not yet settled) and
  ``running`` (how many are in progress, for ``max_parallel``), plus
  ``StepRecord.unmet``, the number of a step's dependencies not yet settled. A
  step is *settled* when its status is terminal (``StepStatus.is_terminal``:
  complete, or failed/skipped under a tolerant ``on_dependency_failure`` policy,
  or ended with its workflow), so ``open == 0`` means nothing more can run. They
  are rebuilt from the steps when a record is loaded from JSON and never stored.

Frozen dataclasses stop attribute assignment, not changes inside their dicts and
lists. Inside runfox a record's JSON payloads (spec, inputs, state, outcome, step
outputs and errors) are never changed, which is what lets the in-memory store and
the SQL store's cache keep one record object for every transition. Whatever leaves
runfox gets its own copy: ``Store.load``, ``Backend.load`` and ``Workflow.record``
return ``WorkflowRecord.isolated()`` copies, ``Store.write`` stores one, and the
results and callback arguments carry copies.

Decoding is forgiving about the *shape* of stored JSON payloads and strict about
structure. A record whose ``state`` or ``inputs`` is valid JSON but not an
object, or a step whose ``output``, ``error``, counters or times have the wrong
type, still loads: the bad value is replaced by a neutral one (``{}``, ``None``,
``0``) and kept, with its place, in ``WorkflowRecord.defects``. The Backend fails
such an execution on its next transition with a ``CorruptRecord`` outcome that
holds the stored values, so nothing is lost and no worker re-runs an executor
against a record it cannot use. A missing spec, key or step id is still a
``CorruptRecord`` raised by the load.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import CorruptRecord
from .expressions import LazyMapping
from .jsonvalue import json_clone
from .spec import WorkflowSpec, item_id, item_index, plan_step_id, spec_for
from .status import StepStatus, WorkflowStatus

__all__ = [
    "RECORD_SCHEMA",
    "Defect",
    "MapProgress",
    "ProductsView",
    "StepMap",
    "StepRecord",
    "StepsView",
    "WorkflowRecord",
    "context_for",
    "item_counts",
    "ordered_items",
    "progress_counts",
]

#: Version of the JSON layout produced by ``WorkflowRecord.to_dict``.
RECORD_SCHEMA = 1

_CHUNK_BITS = 6
_CHUNK = 1 << _CHUNK_BITS
_MASK = _CHUNK - 1

_WAITING = frozenset({StepStatus.READY, StepStatus.RETRY})

def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).isoformat()


@dataclass(frozen=True)
class Defect:
    """A stored value of the wrong shape, found while decoding a record.

    ``where`` names the field (``state``, ``inputs``, ``steps.<id>.output``);
    ``step`` is the step id for step fields; ``stored`` is the value exactly as
    it was stored, so that failing the execution loses nothing.
    """

    where: str
    message: str
    stored: Any
    step: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"where": self.where, "message": self.message}
        if self.step is not None:
            data["step"] = self.step
        data["stored"] = self.stored
        return data


def _isolated_defect(defect: Defect) -> Defect:
    return Defect(defect.where, defect.message, json_clone(defect.stored), defect.step)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _optional(check: Any) -> Any:
    return lambda value: value is None or check(value)


_STEP_STATUSES = frozenset(s.value for s in StepStatus)
_NUMBER = (int, float)

# (field, check, neutral value, what the field must be) for StepRecord.from_dict
_STEP_FIELDS: tuple[tuple[str, Any, Any, str], ...] = (
    ("run_id", _is_count, 0, "an integer >= 0"),
    ("attempts", _is_count, 0, "an integer >= 0"),
    ("output", _optional(lambda v: isinstance(v, dict)), None, "an object or null"),
    ("error", _optional(lambda v: isinstance(v, dict)), None, "an object or null"),
    ("started_at", _optional(_is_number), None, "a number or null"),
    ("finished_at", _optional(_is_number), None, "a number or null"),
    ("not_before", _optional(_is_number), None, "a number or null"),
    ("inputs", _optional(lambda v: isinstance(v, dict)), None, "an object or null"),
    ("cached", lambda v: type(v) is bool, False, "a boolean"),
    ("items", _optional(_is_count), None, "an integer >= 0 or null"),
    ("child", _optional(lambda v: isinstance(v, str)), None, "a string or null"),
)


@dataclass(frozen=True)
class StepRecord:
    """The stored state of one step.

    ``run_id`` names the current dispatch generation; it grows by one on every
    retry and every reset, and a result is applied only when it carries the
    current ``run_id`` while the step is ``in_progress``. ``attempts`` counts
    dispatches since the step was last reset. ``error`` is the error of the last
    failed attempt; ``not_before`` is when a waiting retry becomes due. Times are
    epoch seconds (UTC). ``inputs`` are the resolved inputs of the last claim (what
    the job of ``run_id`` was sent), kept for inspection; a reset clears them.
    ``cached`` is true when the output came from the step cache (``runfox.cache``)
    instead of a run; stored only when true. ``child`` is the key of the execution a
    ``workflow`` step started for its current run (a sub-workflow); stored only when set.
    """

    id: str
    status: StepStatus = StepStatus.READY
    run_id: int = 0
    attempts: int = 0
    output: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    started_at: float | None = None
    finished_at: float | None = None
    not_before: float | None = None
    unmet: int = field(default=0, compare=False)
    #: Stored values of the wrong shape replaced while decoding (see ``Defect``).
    defects: tuple[Defect, ...] = field(default=(), compare=False, repr=False)
    inputs: dict[str, Any] | None = field(default=None, repr=False)
    cached: bool = False
    #: A map step claimed with its list: how many items it has (its items are the
    #: step records ``"<id>[<index>]"``, index < items). ``None`` for any other step,
    #: and for a map step not yet claimed or reset since (its old item records, if
    #: any, are then stale: nothing reads them). Stored only when set.
    items: int | None = None
    child: str | None = None

    def evolve(self, **changes: Any) -> StepRecord:
        """A copy with ``changes`` (cheaper than ``dataclasses.replace``)."""
        # Frozen dataclasses refuse setattr; copying __dict__ is the cheap way round.
        new = object.__new__(StepRecord)
        state = new.__dict__
        state.update(self.__dict__)
        state.update(changes)
        return new

    def isolated(self) -> StepRecord:
        """This step with its own copies of ``output``, ``error`` and defect values.

        A step with none of them is returned as it is: nothing in it can change.
        """
        if self.output is None and self.error is None and self.inputs is None and \
                not self.defects:
            return self
        return self.evolve(output=json_clone(self.output), error=json_clone(self.error),
                           inputs=json_clone(self.inputs),
                           defects=tuple(_isolated_defect(d) for d in self.defects))

    @property
    def start_time(self) -> str | None:
        """``started_at`` as an ISO 8601 string (the seed's field)."""
        return _iso(self.started_at)

    @property
    def end_time(self) -> str | None:
        """``finished_at`` as an ISO 8601 string (the seed's field)."""
        return _iso(self.finished_at)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "status": self.status.value, "run_id": self.run_id,
                                "attempts": self.attempts}
        for name in ("output", "error", "started_at", "finished_at", "not_before", "inputs"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if self.cached:
            data["cached"] = True
        if self.items is not None:
            data["items"] = self.items
        if self.child is not None:
            data["child"] = self.child
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], unmet: int = 0, *,
                  list_output: bool = False) -> StepRecord:
        """Rebuild a step; a field of the wrong shape becomes a ``Defect``, not an error.

        ``list_output``: the step is a map step, whose output is a JSON list (any
        other step's output is an object). ``KeyError`` if there is no ``id`` (the
        step cannot be placed at all).
        """
        step_id = data["id"]
        get = data.get
        status, run_id, attempts = get("status", "ready"), get("run_id", 0), get("attempts", 0)
        output, error = get("output"), get("error")
        started_at, finished_at, not_before = (get("started_at"), get("finished_at"),
                                               get("not_before"))
        inputs = get("inputs")
        cached = get("cached", False)
        items = get("items")
        if list_output and type(output) is list:
            output_ok = True
        else:
            output_ok = output is None or type(output) is dict
        child = get("child")
        if (isinstance(status, str) and status in _STEP_STATUSES
                and type(run_id) is int and run_id >= 0 and type(attempts) is int and attempts >= 0
                and output_ok and (items is None or (type(items) is int and items >= 0))
                and (error is None or type(error) is dict)
                and (started_at is None or type(started_at) in _NUMBER)
                and (finished_at is None or type(finished_at) in _NUMBER)
                and (not_before is None or type(not_before) in _NUMBER)
                and (inputs is None or type(inputs) is dict) and type(cached) is bool
                and (child is None or type(child) is str)):
            return cls(step_id, StepStatus(status), run_id, attempts, output, error,
                       started_at, finished_at, not_before, unmet, inputs=inputs,
                       cached=cached, items=items, child=child)
        return cls._with_defects(step_id, data, unmet, list_output)

    @classmethod
    def _with_defects(cls, step_id: str, data: Mapping[str, Any], unmet: int,
                      list_output: bool = False) -> StepRecord:
        """The slow path of ``from_dict``: check each field, keep what is wrong."""
        defects: list[Defect] = []
        fields: dict[str, Any] = {}
        raw_status = data.get("status", StepStatus.READY)
        try:
            fields["status"] = StepStatus(raw_status)
        except (ValueError, TypeError):
            fields["status"] = StepStatus.READY
            defects.append(Defect(f"steps.{step_id}.status",
                                  f"{raw_status!r} is not a step status", raw_status, step_id))
        for name, check, neutral, want in _STEP_FIELDS:
            value = data.get(name, neutral)
            if name == "output" and list_output and type(value) is list:
                pass
            elif not check(value):
                defects.append(Defect(f"steps.{step_id}.{name}",
                                      f"must be {want}, found {_kind(value)}", value, step_id))
                value = neutral
            fields[name] = value
        return cls(id=step_id, unmet=unmet, defects=tuple(defects), **fields)

class StepMap(Mapping[str, StepRecord]):
    """An immutable, ordered map of step id to ``StepRecord`` with cheap updates.

    The plan's steps come first, in spec order; the items of map steps are
    appended by ``extend`` when a map step is claimed (and never removed).
    ``replace`` and ``extend`` return a new map sharing every untouched chunk with
    this one.
    """

    __slots__ = ("_chunks", "_index", "_keys")

    def __init__(
        self,
        keys: tuple[str, ...],
        index: Mapping[str, int],
        chunks: tuple[tuple[StepRecord, ...], ...],
    ) -> None:
        self._keys = keys
        self._index = index
        self._chunks = chunks

    @classmethod
    def build(
        cls, records: Iterable[StepRecord], index: Mapping[str, int] | None = None
    ) -> StepMap:
        items = list(records)
        keys = tuple(r.id for r in items)
        if index is None or len(index) != len(keys):
            index = {k: i for i, k in enumerate(keys)}
        chunks = tuple(tuple(items[i : i + _CHUNK]) for i in range(0, len(items), _CHUNK))
        return cls(keys, index, chunks)

    def __getitem__(self, key: str) -> StepRecord:
        i = self._index[key]
        return self._chunks[i >> _CHUNK_BITS][i & _MASK]

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def values(self) -> Iterator[StepRecord]:  # type: ignore[override]
        for chunk in self._chunks:
            yield from chunk

    def items(self) -> Iterator[tuple[str, StepRecord]]:  # type: ignore[override]
        for chunk in self._chunks:
            for record in chunk:
                yield record.id, record

    def replace(self, changes: Mapping[str, StepRecord]) -> StepMap:
        """A new map with ``changes`` applied; untouched chunks are shared."""
        if not changes:
            return self
        chunks = list(self._chunks)
        touched: dict[int, list[StepRecord]] = {}
        index = self._index
        for key, record in changes.items():
            i = index[key]
            c = i >> _CHUNK_BITS
            chunk = touched.get(c)
            if chunk is None:
                chunk = touched[c] = list(chunks[c])
            chunk[i & _MASK] = record
        for c, chunk in touched.items():
            chunks[c] = tuple(chunk)
        return StepMap(self._keys, index, tuple(chunks))

    def get(self, key: str, default: Any = None) -> Any:
        i = self._index.get(key)
        return default if i is None else self._chunks[i >> _CHUNK_BITS][i & _MASK]

    def extend(self, records: Iterable[StepRecord]) -> StepMap:
        """A new map with ``records`` (new keys) appended; full chunks are shared.

        O(len(self)) for the key index, so callers add many records at once (a map
        step's items, when it is claimed). ``ValueError`` for a key already present.
        """
        added = list(records)
        if not added:
            return self
        index = dict(self._index)
        n = len(self._keys)
        for offset, record in enumerate(added):
            if record.id in index:
                raise ValueError(f"step {record.id!r} is already in the map")
            index[record.id] = n + offset
        keys = self._keys + tuple(r.id for r in added)
        chunks = list(self._chunks)
        pending = added
        if chunks and len(chunks[-1]) < _CHUNK:
            room = _CHUNK - len(chunks[-1])
            chunks[-1] = chunks[-1] + tuple(pending[:room])
            pending = pending[room:]
        chunks.extend(tuple(pending[i : i + _CHUNK]) for i in range(0, len(pending), _CHUNK))
        return StepMap(keys, index, tuple(chunks))

    def isolated(self) -> StepMap:
        """A map of the same steps, each with its own JSON payloads (``StepRecord.isolated``)."""
        return StepMap(self._keys, self._index,
                       tuple(tuple(r.isolated() for r in chunk) for chunk in self._chunks))

    def changed_since(self, other: StepMap) -> list[str]:
        """Ids whose record differs (by identity) from ``other``, then the ids appended
        since ``other`` (``extend``); every id when ``other`` is not an earlier form
        of this map. Shared chunks cost one identity check each."""
        n = len(other._keys)
        if other._keys is not self._keys and (
                n > len(self._keys) or self._keys[:n] != other._keys):
            return list(self._keys)
        changed = []
        for mine, theirs in zip(self._chunks, other._chunks, strict=False):
            if mine is theirs:
                continue
            for a, b in zip(mine, theirs, strict=False):
                if a is not b:
                    changed.append(a.id)
        changed.extend(self._keys[n:])
        return changed

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StepMap):
            return self._keys == other._keys and all(
                a is b or a == b for a, b in zip(self.values(), other.values(), strict=True)
            )
        if isinstance(other, Mapping):
            return dict(self.items()) == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"StepMap({dict(self.items())!r})"

class ProductsView(LazyMapping):
    """``products`` as JSON Logic sees it: ``{name: value}`` for products whose producer
    has an output. The value is ``output[name]`` when the producer's output has that key
    (a step making several products returns them by name), else the whole output."""

    __slots__ = ("_producers", "_steps")

    def __init__(self, steps: StepsView, producers: Mapping[str, str]) -> None:
        self._steps = steps
        self._producers = producers

    def __getitem__(self, name: str) -> Any:
        output = self._steps[self._producers[name]]["output"]  # KeyError: not available
        return output[name] if isinstance(output, dict) and name in output else output

    def __iter__(self) -> Iterator[str]:
        return (name for name, sid in self._producers.items() if sid in self._steps)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class StepsView(LazyMapping):
    """``steps`` as JSON Logic sees it: ``{id: {"output": ...}}`` for steps with output."""

    __slots__ = ("_override", "_steps")

    def __init__(self, steps: StepMap, override: tuple[str, Any] | None = None) -> None:
        self._steps = steps
        self._override = override  # (step_id, output) seen by that step's own branches

    def _output(self, key: str) -> Any:
        if self._override is not None and self._override[0] == key:
            return self._override[1]
        return self._steps[key].output

    def __getitem__(self, key: str) -> dict[str, Any]:
        output = self._output(key)
        if output is None:
            raise KeyError(key)
        return {"output": output}

    def get(self, key: str, default: Any = None) -> Any:
        try:
            output = self._output(key)
        except KeyError:
            return default
        return default if output is None else {"output": output}

    def __iter__(self) -> Iterator[str]:
        return (sid for sid in self._steps
                if not sid.endswith("]") and self._output(sid) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

@dataclass(frozen=True, slots=True)
class MapProgress:
    """Where the items of one claimed map step stand: derived, never stored.

    Kept on ``WorkflowRecord.maps`` for each map step in progress, and carried from
    record to record like ``ready`` and ``open``, so that applying one item's
    result or claiming the next items never scans the items. ``next`` is the
    lowest index never claimed (items are claimed in index order); ``waiting``
    holds the indices below it waiting for a retry; ``settled`` counts items
    complete or failed, ``failed`` those failed.
    """

    total: int
    next: int = 0
    running: int = 0
    settled: int = 0
    failed: int = 0
    waiting: frozenset[int] = frozenset()


def _map_progress(steps: StepMap, step_id: str, total: int) -> MapProgress:
    """A claimed map step's progress, from its item records (O(items), on load)."""
    nxt = running = settled = failed = 0
    waiting = []
    for i in range(total):
        item = steps.get(item_id(step_id, i))
        if item is None:
            continue
        status = item.status
        if status is not StepStatus.READY or item.attempts:
            nxt = i + 1
        if status is StepStatus.IN_PROGRESS:
            running += 1
        elif status is StepStatus.COMPLETE:
            settled += 1
        elif status is StepStatus.FAILED:
            settled += 1
            failed += 1
        elif status is StepStatus.RETRY:
            waiting.append(i)
    return MapProgress(total, nxt, running, settled, failed, frozenset(waiting))


def ordered_items(plan: WorkflowSpec, raw: Iterable[Mapping[str, Any]]
                   ) -> list[Mapping[str, Any]]:
    """The stored item records of ``plan``'s map steps, by map step (spec order), then
    index; records of steps the plan does not have are dropped, as for steps."""
    found = []
    for data in raw:
        sid = data["id"]
        if sid in plan.by_id:
            continue
        index = item_index(sid) if isinstance(sid, str) else None
        parent = plan.by_id.get(plan_step_id(sid)) if index is not None else None
        if parent is not None and parent.map is not None:
            found.append(((parent.index, index), data))
    found.sort(key=lambda pair: pair[0])
    return [data for _, data in found]


@dataclass(frozen=True)
class WorkflowRecord:
    """The stored state of one workflow execution.

    ``version`` is the number of times the record has been written; a store
    writes a record only if the stored version is one less (see ``Store.write``).
    ``spec`` is the raw definition; ``plan`` is its compiled form. ``parent`` is set
    on a sub-workflow's execution: ``{"execution": key, "step": step_id, "run_id": n,
    "depth": d}`` names the parent step run it reports its end to (``None`` otherwise;
    written once, at creation).
    """

    workflow_id: str
    execution_id: str
    spec: dict[str, Any]
    inputs: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    steps: StepMap = field(default=None)  # type: ignore[assignment]
    status: WorkflowStatus = WorkflowStatus.PENDING
    outcome: Any = None
    version: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    parent: dict[str, Any] | None = None
    # Derived, never stored: see the module docstring.
    plan: WorkflowSpec = field(default=None, compare=False, repr=False)  # type: ignore[assignment]
    ready: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    open: int = field(default=-1, compare=False, repr=False)
    running: int = field(default=0, compare=False, repr=False)
    #: Map step id -> ``MapProgress``, for map steps in progress with their items.
    maps: Mapping[str, MapProgress] = field(default_factory=dict, compare=False, repr=False)
    #: Stored values of the wrong shape found when the record was built (decoded):
    #: the header's own and every step's. Empty for a sound record.
    defects: tuple[Defect, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        plan = self.plan or spec_for(self.spec, self.workflow_id)
        object.__setattr__(self, "plan", plan)
        object.__setattr__(self, "status", WorkflowStatus(self.status))
        defects = list(self.defects)
        for name in ("inputs", "state"):
            value = getattr(self, name)
            if value is None:
                object.__setattr__(self, name, {})
            elif not isinstance(value, dict):
                defects.append(Defect(name, f"must be an object, found {_kind(value)}", value))
                object.__setattr__(self, name, {})
        steps = self.steps
        if steps is None:
            steps = StepMap.build((StepRecord(s.id) for s in plan.steps), plan.index)
        elif not isinstance(steps, StepMap):
            given = steps
            steps = StepMap.build(
                (given[s.id] if s.id in given else StepRecord(s.id) for s in plan.steps), plan.index
            )
            if len(given) > len(plan.steps):
                items = ordered_items(plan, ({"id": k} for k in given))
                steps = steps.extend(given[d["id"]] for d in items)
        if self.open < 0:
            steps, ready, open_count, running = _derive(plan, steps)
            maps = _derive_maps(plan, steps)
            object.__setattr__(self, "ready", ready)
            object.__setattr__(self, "open", open_count)
            object.__setattr__(self, "running", running)
            object.__setattr__(self, "maps", maps)
        object.__setattr__(self, "steps", steps)
        for step in steps.values():
            if step.defects:
                defects.extend(step.defects)
        object.__setattr__(self, "defects", tuple(defects))

    @property
    def workflow_execution_id(self) -> str:
        """The store key: ``{workflow_id}#{execution_id}``."""
        return f"{self.workflow_id}#{self.execution_id}"

    @property
    def id(self) -> str:
        return self.workflow_execution_id

    def evolve(self, **changes: Any) -> WorkflowRecord:
        """A copy with ``changes``; derived fields are carried over, not recomputed.

        Callers that change ``steps`` must pass matching ``ready``, ``open`` and
        ``running``.
        """
        new = object.__new__(WorkflowRecord)
        state = new.__dict__
        state.update(self.__dict__)
        state.update(changes)
        return new

    def isolated(self) -> WorkflowRecord:
        """A copy whose JSON payloads belong to the caller alone.

        ``spec``, ``inputs``, ``state``, ``outcome``, every step's ``output`` and
        ``error`` and the stored values of ``defects`` are copied, so changing
        anything inside them (``record.state["x"] = 1``) changes nothing another
        holder of this record sees, nor what a store writes next. What stores hand
        out (``Store.load``) and accept (``Store.write``) pass through here; the
        Backend's own transitions share records instead, as they change nothing.
        ``plan`` (compiled from the spec, never exposed as data) and the derived
        fields are shared. O(record).
        """
        header = tuple(d for d in self.defects if d.step is None)
        steps = self.steps.isolated()
        return self.evolve(
            spec=json_clone(self.spec), inputs=json_clone(self.inputs),
            state=json_clone(self.state), outcome=json_clone(self.outcome), steps=steps,
            parent=json_clone(self.parent),
            defects=tuple(_isolated_defect(d) for d in header) + tuple(
                d for step in steps.values() for d in step.defects))

    # -- JSON ---------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; ``from_dict(to_dict())`` gives an equal record."""
        data: dict[str, Any] = {
            "schema": RECORD_SCHEMA,
            "workflow_id": self.workflow_id,
            "execution_id": self.execution_id,
            "version": self.version,
            "status": self.status.value,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "spec": self.spec,
            "inputs": self.inputs,
            "state": self.state,
            "outcome": self.outcome,
            "steps": [s.to_dict() for s in self.steps.values()],
        }
        if self.parent is not None:
            data["parent"] = self.parent
        return data

    def header_dict(self) -> dict[str, Any]:
        """Everything but ``spec`` and ``steps``: what changes on most transitions."""
        return {
            "version": self.version,
            "status": self.status.value,
            "updated_at": self.updated_at,
            "state": self.state,
            "outcome": self.outcome,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkflowRecord:
        """Rebuild a record; ``CorruptRecord`` if the data is not a runfox record."""
        key = f"{data.get('workflow_id')}#{data.get('execution_id')}" if isinstance(
            data, Mapping) else "?"
        try:
            schema = data.get("schema", RECORD_SCHEMA)
            if schema > RECORD_SCHEMA:
                raise CorruptRecord(key, f"record schema {schema} is newer than this runfox "
                                         f"({RECORD_SCHEMA}); upgrade runfox")
            spec = data["spec"]
            plan = spec_for(spec, data["workflow_id"])
            raw_steps = data.get("steps") or []
            if isinstance(raw_steps, Mapping):
                raw_steps = list(raw_steps.values())
            by_id = {s["id"]: s for s in raw_steps}
            steps = StepMap.build(
                (StepRecord.from_dict(by_id[s.id], list_output=s.map is not None)
                 if s.id in by_id else StepRecord(s.id) for s in plan.steps),
                plan.index,
            )
            if len(by_id) > len(plan.steps):
                steps = steps.extend(StepRecord.from_dict(d)
                                     for d in ordered_items(plan, by_id.values()))
            return cls(
                workflow_id=data["workflow_id"],
                execution_id=data["execution_id"],
                spec=spec,
                inputs=data.get("inputs", {}),  # a wrong shape becomes a Defect
                state=data.get("state", {}),
                steps=steps,
                status=WorkflowStatus(data.get("status", WorkflowStatus.PENDING)),
                outcome=data.get("outcome"),
                version=int(data.get("version", 0)),
                created_at=float(data.get("created_at", 0.0)),
                updated_at=float(data.get("updated_at", 0.0)),
                parent=_parent(data.get("parent")),
                plan=plan,
            )
        except CorruptRecord:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CorruptRecord(key, f"{type(exc).__name__}: {exc}") from exc

def _derive_maps(plan: WorkflowSpec, steps: StepMap) -> dict[str, MapProgress]:
    """The progress of every map step in progress with its items (O(items))."""
    maps: dict[str, MapProgress] = {}
    for s in plan.steps:
        if s.map is not None:
            record = steps[s.id]
            if record.items is not None and record.status is StepStatus.IN_PROGRESS:
                maps[s.id] = _map_progress(steps, s.id, record.items)
    return maps
def _parent(value: Any) -> dict[str, Any] | None:
    """A stored ``parent`` header: an object naming the parent execution, or ``None``."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("execution"), str) \
            or not isinstance(value.get("step"), str):
        raise ValueError(f"parent must be an object with execution and step, found {value!r}")
    return value


class StepChanges:
    """Step changes layered over a record, keeping ``ready``/``open``/``unmet``,
    ``running`` and map progress right incrementally: O(changed steps and their
    dependents), never O(steps). ``runfox.graph`` edits records through it (adding
    the failure policies); a store moves a cached record forward with the rows
    written since (``_put`` each, then ``commit``).
    """

    __slots__ = ("_check", "_maps_copied", "_ready_copied", "added", "base", "changes", "maps",
                 "open", "ready", "resolve", "running")

    def __init__(self, record: WorkflowRecord, resolve: bool | None = None) -> None:
        self.base = record
        self.changes: dict[str, StepRecord] = {}
        #: Item records new in this transition (in ``changes`` too), in order.
        self.added: list[str] = []
        self.maps: Any = record.maps
        self._maps_copied = False
        self.open = record.open
        self.running = record.running
        self.ready: Any = record.ready
        self._ready_copied = False
        #: Apply ``on_dependency_failure`` to steps whose dependencies all settled
        #: (only a tolerant plan can have a settled dependency that is not complete).
        self.resolve = record.plan.tolerant if resolve is None else resolve
        self._check: list[str] = []

    def get(self, step_id: str) -> StepRecord:
        record = self.changes.get(step_id)
        return record if record is not None else self.base.steps[step_id]

    def put(self, new: StepRecord) -> None:
        """Replace a step and update the counts, the ready set and its dependents."""
        self._put(new)

    def find(self, step_id: str) -> StepRecord | None:
        record = self.changes.get(step_id)
        return record if record is not None else self.base.steps.get(step_id)

    def _maps(self) -> dict[str, MapProgress]:
        if not self._maps_copied:
            self.maps = dict(self.maps)
            self._maps_copied = True
        return self.maps

    def start_map(self, step_id: str, progress: MapProgress) -> None:
        self._maps()[step_id] = progress

    def add_item(self, new: StepRecord) -> None:
        """Create or renew an item record (a map step being claimed)."""
        if self.find(new.id) is None:
            self.added.append(new.id)
        self.changes[new.id] = new
        self._item_moved(None, new)

    def _item_moved(self, old: StepRecord | None, new: StepRecord) -> None:
        """Keep the item's map progress right (only for the items of a map in progress)."""
        parent = plan_step_id(new.id)
        progress = self.maps.get(parent)
        if progress is None:
            return
        index = item_index(new.id)
        assert index is not None
        if index >= progress.total:
            return
        running, settled, failed = progress.running, progress.settled, progress.failed
        waiting, nxt = progress.waiting, progress.next
        if old is not None:
            status = old.status
            running -= status is StepStatus.IN_PROGRESS
            settled -= status is StepStatus.COMPLETE or status is StepStatus.FAILED
            failed -= status is StepStatus.FAILED
            if status is StepStatus.RETRY:
                waiting = waiting - {index}
        status = new.status
        running += status is StepStatus.IN_PROGRESS
        settled += status is StepStatus.COMPLETE or status is StepStatus.FAILED
        failed += status is StepStatus.FAILED
        if status is StepStatus.RETRY:
            waiting = waiting | {index}
        if (status is not StepStatus.READY or new.attempts) and index >= nxt:
            nxt = index + 1
        self._maps()[parent] = MapProgress(progress.total, nxt, running, settled, failed,
                                           waiting)
    def _ready_set(self) -> set[str]:
        if not self._ready_copied:
            self.ready = set(self.ready)
            self._ready_copied = True
        return self.ready

    def _sync_ready(self, step: StepRecord) -> None:
        want = step.status in _WAITING and step.unmet == 0
        if want != (step.id in self.ready):
            if want:
                self._ready_set().add(step.id)
            else:
                self._ready_set().discard(step.id)

    def _put(self, new: StepRecord) -> None:
        old = self.get(new.id)
        spec = self.base.plan.by_id.get(new.id)
        if spec is None:  # a map item: counted by its map, not by the workflow
            self.changes[new.id] = new
            self._item_moved(old, new)
            return
        if spec.map is not None and new.status is not StepStatus.IN_PROGRESS:
            if new.id in self.maps:
                del self._maps()[new.id]
            if new.items is not None and new.status in _WAITING:
                new = new.evolve(items=None)  # reset: the items are built again at claim
        if old.unmet != new.unmet:
            new = new.evolve(unmet=old.unmet)  # unmet is owned here, not by callers
        self.changes[new.id] = new
        was_running = old.status is StepStatus.IN_PROGRESS
        if was_running != (new.status is StepStatus.IN_PROGRESS):
            self.running += -1 if was_running else 1
        was_done = old.status.is_terminal  # settled: see runfox.records
        is_done = new.status.is_terminal
        if was_done != is_done:
            delta = -1 if is_done else 1
            self.open += delta
            for dependent_id in self.base.plan.by_id[new.id].dependents:
                dependent = self.get(dependent_id)
                dependent = dependent.evolve(unmet=dependent.unmet + delta)
                self.changes[dependent_id] = dependent
                self._sync_ready(dependent)
                if self.resolve and dependent.unmet == 0 and dependent.status in _WAITING:
                    self._check.append(dependent_id)
        self._sync_ready(new)
        if self.resolve and new.unmet == 0 and new.status in _WAITING and \
                old.status not in _WAITING:
            self._check.append(new.id)  # made ready again (a loop reset)

    def commit(self, **fields: Any) -> WorkflowRecord:
        ready = self.ready if not self._ready_copied else frozenset(self.ready)
        steps = self.base.steps
        changes = self.changes
        if self.added:
            steps = steps.extend(changes[k] for k in self.added)
            added = set(self.added)
            changes = {k: v for k, v in changes.items() if k not in added}
        return self.base.evolve(
            steps=steps.replace(changes), ready=ready, open=self.open,
            running=self.running, maps=self.maps, **fields
        )


def _derive(plan: WorkflowSpec, steps: StepMap
            ) -> tuple[StepMap, frozenset[str], int, int]:
    """Compute ``unmet`` per step, the ready set, the open and running counts from
    scratch. Map items count in none of them (``_derive_maps``)."""
    settled = {s.id for s in plan.steps if steps[s.id].status.is_terminal}
    changes: dict[str, StepRecord] = {}
    ready = set()
    running = 0
    for s in plan.steps:
        record = steps[s.id]
        unmet = sum(1 for d in s.depends_on if d not in settled)
        if record.unmet != unmet:
            record = record.evolve(unmet=unmet)
            changes[s.id] = record
        if unmet == 0 and record.status in _WAITING:
            ready.add(s.id)
        running += record.status is StepStatus.IN_PROGRESS
    return steps.replace(changes), frozenset(ready), len(plan.steps) - len(settled), running

def context_for(record: WorkflowRecord) -> dict[str, Any]:
    """The JSON Logic data for inputs and outputs: ``steps``, ``input``, ``state``, and
    ``products`` when the spec declares any."""
    steps = StepsView(record.steps)
    context = {"steps": steps, "input": record.inputs, "state": record.state}
    if record.plan.producers:
        context["products"] = ProductsView(steps, record.plan.producers)
    return context


# -- counts for people (status, progress bars, the dashboard) ------------------------------


def progress_counts(record: WorkflowRecord) -> dict[str, int]:
    """Steps by status, plus ``total``: the spec's steps, so a map step counts once and
    its items not at all (``item_counts`` has those). What progress displays show."""
    counts = {status.value: 0 for status in StepStatus}
    for spec in record.plan.steps:
        counts[record.steps[spec.id].status.value] += 1
    counts["total"] = len(record.plan.steps)
    return counts


def item_counts(record: WorkflowRecord, step_id: str) -> dict[str, int] | None:
    """The items of map step ``step_id`` by status (``total``, ``settled``,
    ``complete``, ``failed``, ``in_progress``), or ``None`` when it has none.

    Cheap while the map runs (``record.maps``); O(items) once it is done."""
    step = record.steps[step_id]
    total = step.items
    if total is None:
        return None
    progress = record.maps.get(step_id)
    if progress is not None:
        return {"total": total, "settled": progress.settled,
                "complete": progress.settled - progress.failed, "failed": progress.failed,
                "in_progress": progress.running}
    counts = {"total": total, "settled": 0, "complete": 0, "failed": 0, "in_progress": 0}
    for i in range(total):
        item = record.steps.get(item_id(step_id, i))
        status = item.status if item is not None else StepStatus.READY
        if status is StepStatus.COMPLETE or status is StepStatus.FAILED:
            counts["settled"] += 1
            counts[status.value] += 1
        elif status is StepStatus.IN_PROGRESS:
            counts["in_progress"] += 1
    return counts
