"""``Schedules``: durable schedules in a backend, fired exactly once per fire time.

    schedules = runfox.Schedules(backend)
    schedules.add("nightly", "etl.yaml", cron="30 2 * * *", tz="Europe/Paris")
    schedules.tick()          # what every `runfox worker` does on its loop

Triggers, time zones, catch-up and overlap are defined in ``runfox.schedule``.

Firing exactly once, with any number of processes ticking at once and any of
them dying at any point. A tick at ``now`` handles each due schedule in two
compare-and-set writes on its ``version``:

1. *Decide*: compute the fire times to start (catch-up, overlap) and the next
   fire time, and write ``next_fire = next`` and ``pending = fires`` together.
   Exactly one process wins this write for a given version; every other one
   reloads and finds the schedule already moved on (or with the same pending
   fires, see 2). So each fire time is decided at most once.
2. *Start*: for each pending fire time ``f``, create its execution with the
   idempotency key ``schedule:<name>:<f>`` (``Backend.create(key=)``, one
   conditional write in the store) and dispatch its first jobs; then write
   ``pending = ()`` and the last execution id.

A process dying after 1 leaves ``pending`` stored, and the schedule is due
(``due_at`` is 0) until some process completes 2: the fire is not lost. Two
processes completing 2 for the same pending fire create one execution, because
the second ``create`` finds the key: the fire is not doubled. Dying between the
create and the dispatch leaves the execution claimed-but-not-dispatched, which
the workers' sweep dispatches again (``redispatch_stale``).
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .backend.base import Backend
from .backend.schedule_store import ScheduleStore
from .errors import ConflictError, NotJSONError, RunfoxError, SpecError, WorkflowNotFound
from .jsonvalue import json_copy
from .schedule import (
    Schedule,
    ScheduleError,
    check_name,
    check_policies,
    choose_fires,
    fire_key,
    make_trigger,
    next_fire,
    next_fires,
)
from .spec import WorkflowSpec, load_spec, spec_for

__all__ = ["Fire", "ScheduleNotFound", "Schedules"]

logger = logging.getLogger("runfox.schedules")

#: Compare-and-set attempts on one schedule within one tick.
_ATTEMPTS = 50


class ScheduleNotFound(RunfoxError, KeyError):
    """No schedule has that name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "no such schedule"


@dataclass(frozen=True)
class Fire:
    """One fire a tick handled: the schedule, its fire time and the execution started."""

    name: str
    fire_time: float
    workflow_execution_id: str


class Schedules:
    """Add, inspect and fire the schedules stored in ``backend``'s store.

    Raises ``BackendError`` at construction when the store keeps no schedules.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.store: ScheduleStore = backend.store.schedules()

    # -- managing ------------------------------------------------------------------

    def add(self, name: str, spec: Mapping[str, Any] | WorkflowSpec | str | os.PathLike[str],
            *, cron: str | None = None, every: str | float | None = None,
            at: str | None = None, tz: str = "UTC", inputs: dict[str, Any] | None = None,
            catch_up: str = "one", overlap: str = "allow") -> Schedule:
        """Store a new schedule; returns it. ``spec`` is a mapping, a compiled spec or
        a YAML file path; its compiled form is stored, so later edits to the file
        change nothing.

        Raises:
            ScheduleError: an invalid field (``field`` names it: name, trigger,
                cron, every, at, tz, catch_up, overlap, inputs); nothing stored.
            ScheduleExists: the name is taken; nothing stored.
            SpecError: the spec or the inputs are invalid; nothing stored.
        """
        check_name(name)
        check_policies(catch_up, overlap)
        now = self.backend.clock()
        trigger = make_trigger(cron=cron, every=every, at=at, tz=tz, now=now)
        plan = _compile(spec)
        try:
            given = json_copy(inputs or {}, "inputs")
        except NotJSONError as exc:
            raise ScheduleError("inputs", str(exc)) from exc
        if not isinstance(given, dict):
            raise ScheduleError("inputs", "inputs must be a mapping")
        plan.check_inputs(given)
        schedule = Schedule(name=name, spec=json_copy(plan.raw), trigger=trigger, tz=tz,
                            inputs=given, next_fire=next_fire(trigger, tz, now),
                            catch_up=catch_up, overlap=overlap, created_at=now, updated_at=now)
        self.store.add(schedule)
        return schedule

    def get(self, name: str) -> Schedule:
        """The schedule called ``name``; ``ScheduleNotFound`` (a ``KeyError``) if none."""
        found = self.store.get(name)
        if found is None:
            raise ScheduleNotFound(f"no schedule called {name!r}")
        return found

    def list(self) -> builtins.list[Schedule]:
        """Every schedule, by name."""
        return self.store.list()

    def pause(self, name: str) -> Schedule:
        """Stop firing ``name`` (fires already decided still start)."""
        return self._change(name, lambda s, now: {"paused": True})

    def resume(self, name: str) -> Schedule:
        """Fire ``name`` again from now on: fire times missed while paused are not
        caught up, and a stored error is cleared."""
        return self._change(name, lambda s, now: {
            "paused": False, "last_error": None,
            "next_fire": next_fire(s.trigger, s.tz, now) if s.paused else s.next_fire})

    def remove(self, name: str) -> None:
        """Delete ``name``; ``ScheduleNotFound`` if there is none. Its executions stay."""
        if not self.store.remove(name):
            raise ScheduleNotFound(f"no schedule called {name!r}")

    def next(self, name: str, n: int = 5, after: float | None = None) -> builtins.list[float]:
        """The next ``n`` fire times of ``name`` (epoch seconds) after ``after`` (now)."""
        schedule = self.get(name)
        start = self.backend.clock() if after is None else after
        return next_fires(schedule.trigger, schedule.tz, start, n)

    def _change(self, name: str, changes: Any) -> Schedule:
        for _ in range(_ATTEMPTS):
            current = self.get(name)
            new = current.evolve(updated_at=self.backend.clock(),
                                 **changes(current, self.backend.clock()))
            try:
                self.store.replace(new)
                return new
            except ConflictError:
                continue
        raise ConflictError(f"schedule {name!r}: gave up after {_ATTEMPTS} conflicting writes")

    # -- firing ----------------------------------------------------------------------

    def tick(self, now: float | None = None, limit: int = 100) -> builtins.list[Fire]:
        """Fire every schedule due at ``now`` (default: the backend's clock); returns the
        fires handled by this call (an execution another process started for the same
        fire is reported too, with the same id).

        A schedule whose stored spec no longer compiles is paused with the error;
        the others fire. Backend outages propagate.
        """
        when = self.backend.clock() if now is None else float(now)
        fired: builtins.list[Fire] = []
        for schedule in self.store.due(when, limit):
            try:
                fired.extend(self._fire(schedule, when))
            except (SpecError, ScheduleError) as exc:
                self._broken(schedule.name, exc, when)
        return fired

    def _fire(self, schedule: Schedule, now: float) -> builtins.list[Fire]:
        fired: builtins.list[Fire] = []
        current: Schedule | None = schedule
        for _ in range(_ATTEMPTS):
            if current is None:
                return fired
            try:
                if current.pending:
                    fires = self._start_pending(current)
                    self.store.replace(current.evolve(
                        pending=(), last_execution_id=fires[-1].workflow_execution_id,
                        last_fire=fires[-1].fire_time, updated_at=now))
                    return fired + fires
                if current.paused or current.next_fire is None or current.next_fire > now:
                    return fired
                spec_for(current.spec)  # still compiles (the upgrade check)
                times, nxt = choose_fires(current, now, self._running(current))
                decided = current.evolve(pending=tuple(times), next_fire=nxt, updated_at=now)
                self.store.replace(decided)
                current = decided
                if not times:
                    return fired
            except ConflictError:
                current = self.store.get(schedule.name)
        return fired

    def _start_pending(self, schedule: Schedule) -> builtins.list[Fire]:
        plan = spec_for(schedule.spec)
        if schedule.overlap == "cancel_previous" and self._running(schedule):
            assert schedule.last_execution_id is not None
            self.backend.cancel(schedule.last_execution_id,
                                f"cancelled by the next fire of schedule {schedule.name!r}")
        fires = []
        for when in schedule.pending:
            wf_id = self.backend.create(plan, schedule.inputs, key=fire_key(schedule.name, when))
            self.backend.apply_and_advance(wf_id)  # a no-op if another process did it
            fires.append(Fire(schedule.name, when, wf_id))
        return fires

    def _running(self, schedule: Schedule) -> bool:
        if schedule.last_execution_id is None:
            return False
        try:
            record = self.backend.load_shared(schedule.last_execution_id)
        except WorkflowNotFound:
            return False
        return not record.status.is_terminal

    def _broken(self, name: str, exc: Exception, now: float) -> None:
        """Pause ``name`` with the error: its stored definition cannot run."""
        message = f"{type(exc).__name__}: {exc}"
        logger.error("schedule %r paused: %s", name, message)
        with contextlib.suppress(ScheduleNotFound):  # removed meanwhile
            self._change(name, lambda s, _: {"paused": True, "pending": (),
                                             "last_error": message})


def _compile(spec: Mapping[str, Any] | WorkflowSpec | str | os.PathLike[str]) -> WorkflowSpec:
    if isinstance(spec, WorkflowSpec):
        return spec
    if isinstance(spec, Mapping):
        return load_spec(spec)
    return load_spec(Path(spec))
