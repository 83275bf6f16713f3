"""Schedules, the pure part: triggers, next fire times, catch-up and overlap.

Nothing here reads a clock or a store; every function takes ``now`` (epoch
seconds). ``runfox.schedules`` stores schedules and fires them.

Triggers (exactly one per schedule):

- ``cron``: five fields or an alias (``@hourly``, ``@daily`` ...), parsed by
  ``croniter`` and evaluated on the wall clock of the schedule's time zone
  (IANA name, ``zoneinfo``; default ``UTC``). Daylight saving time: a wall time
  that does not exist that day (02:30 when clocks spring forward from 02:00 to
  03:00) is **skipped**; one that occurs twice (01:30 when clocks fall back)
  fires **once**, at its first occurrence. ``croniter`` on its own, given aware
  datetimes, moves the missing 02:30 to 03:00 and fires the repeated 01:30
  twice; runfox therefore iterates naive wall times and converts each itself.
- ``every``: a period (seconds, or ``30s``/``5m``/``1h``/``1d``), counted from
  the moment the schedule was added (its ``anchor``); time zones do not apply.
- ``at``: one ISO 8601 time (a naive one is in the schedule's zone); fires once,
  after which the schedule has no next fire time.

Catch-up, when fire times were missed (every worker down): a fire is *on time*
if it is at most ``MISFIRE_GRACE`` seconds old when a tick sees it, *missed*
otherwise. On-time fires always fire. Missed ones: ``none`` skips them, ``one``
fires the latest of them once (only if no on-time fire happens in the same
tick), ``all`` fires each of them; one tick starts at most ``CATCH_UP_CAP``
fires of a schedule (the latest ones; older ones are skipped).

Overlap with the previous execution of the schedule: ``allow`` starts every
fire; ``skip`` starts nothing while the previous execution is still running,
and ``cancel_previous`` cancels it first. With ``skip`` and ``cancel_previous``
several fires due in one tick would overlap each other, so only the latest of
them starts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import RunfoxError

__all__ = [
    "CATCH_UP",
    "CATCH_UP_CAP",
    "MISFIRE_GRACE",
    "OVERLAP",
    "Schedule",
    "ScheduleError",
    "ScheduleExists",
    "choose_fires",
    "fire_key",
    "iso",
    "make_trigger",
    "next_fire",
    "next_fires",
    "parse_duration",
    "parse_time",
    "zone",
]

#: Seconds a fire may be late and still count as on time (not missed).
MISFIRE_GRACE = 60.0
#: The most missed fires ``catch_up: all`` starts in one go (the latest ones).
CATCH_UP_CAP = 100
CATCH_UP = ("none", "one", "all")
OVERLAP = ("allow", "skip", "cancel_previous")

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
# Wall-clock steps tried before a cron expression counts as never firing.
_CRON_STEPS = 10_000


class ScheduleError(RunfoxError, ValueError):
    """A schedule's definition is invalid; ``field`` names the part that is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class ScheduleExists(ScheduleError):
    """A schedule with that name exists already."""


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ScheduleError("name", f"{name!r} is not a schedule name (letters, digits, "
                            "'.', '_', ':' and '-', at most 100, not starting with a sign)")
    return name


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; ``ScheduleError`` (field ``tz``) if unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ScheduleError("tz", f"unknown time zone {name!r} (an IANA name such as "
                            "'Europe/Paris' or 'UTC')") from exc


def parse_duration(value: str | float | int) -> float:
    """Seconds in ``30``, ``30s``, ``5m``, ``1h``, ``1d``; must be > 0 (field ``every``)."""
    if isinstance(value, bool):
        raise ScheduleError("every", f"{value!r} is not a duration")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        found = _DURATION.match(str(value))
        if found is None:
            raise ScheduleError("every", f"{value!r} is not a duration (seconds, or a number "
                                "with s, m, h or d: 30s, 5m, 1h)")
        seconds = float(found.group(1)) * _UNITS[found.group(2) or "s"]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ScheduleError("every", f"the period must be more than 0 seconds, got {value!r}")
    return seconds


def parse_time(text: str, tz: ZoneInfo) -> float:
    """Epoch seconds of an ISO 8601 time; a naive one is in ``tz`` (field ``at``)."""
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError as exc:
        raise ScheduleError("at", f"{text!r} is not an ISO 8601 time "
                            "(e.g. 2030-01-31T09:00 or 2030-01-31T09:00:00+01:00)") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.timestamp()


def iso(when: float, tz: str = "UTC") -> str:
    """``when`` as an ISO 8601 time in ``tz`` (seconds precision unless fractional)."""
    moment = datetime.fromtimestamp(when, zone(tz))
    spec = "seconds" if moment.microsecond == 0 else "milliseconds"
    return moment.isoformat(timespec=spec)


def fire_key(name: str, when: float) -> str:
    """The idempotency key of ``name``'s fire at ``when``: ``schedule:<name>:<UTC ISO>``."""
    moment = datetime.fromtimestamp(when, UTC)
    return f"schedule:{name}:{moment.isoformat(timespec='microseconds')}"


def _check_cron(expr: str) -> str:
    from croniter import croniter

    if not isinstance(expr, str) or not expr.strip():
        raise ScheduleError("cron", "a cron expression is needed (five fields or @hourly ...)")
    expr = " ".join(expr.split())
    if len(expr.split()) not in (1, 5) or not croniter.is_valid(expr):
        raise ScheduleError("cron", f"{expr!r} is not a valid cron expression (five fields "
                            "'minute hour day month weekday', or @hourly, @daily, @weekly, "
                            "@monthly, @yearly)")
    return expr


def make_trigger(*, cron: str | None = None, every: str | float | None = None,
                 at: str | None = None, tz: str = "UTC", now: float) -> dict[str, Any]:
    """A checked trigger (the stored form) from exactly one of ``cron``, ``every``, ``at``.

    Raises:
        ScheduleError: none or several given, or the one given is invalid, or
            ``at`` is not after ``now``, or ``tz`` is unknown; ``field`` names it.
    """
    given = [name for name, value in (("cron", cron), ("every", every), ("at", at))
             if value is not None]
    if len(given) != 1:
        raise ScheduleError("trigger", "give exactly one of cron, every and at"
                            + (f" (got {', '.join(given)})" if given else ""))
    zone_info = zone(tz)
    trigger: dict[str, Any]
    if cron is not None:
        trigger = {"cron": _check_cron(cron)}
    elif every is not None:
        trigger = {"every": parse_duration(every), "anchor": now}
    else:
        when = parse_time(str(at), zone_info)
        if when <= now:
            raise ScheduleError("at", f"{at!r} is in the past (now is {iso(now, tz)})")
        trigger = {"at": when}
    if next_fire(trigger, tz, now) is None:
        raise ScheduleError(given[0], "the trigger never fires")
    return trigger


def describe_trigger(trigger: dict[str, Any], tz: str) -> str:
    """``cron 0 2 * * * (Europe/Paris)``, ``every 30s``, ``at 2030-01-01T09:00:00+00:00``."""
    if "cron" in trigger:
        return f"cron {trigger['cron']} ({tz})"
    if "every" in trigger:
        seconds = float(trigger["every"])
        return f"every {seconds:g}s"
    return f"at {iso(float(trigger['at']), tz)}"


# -- fire times ---------------------------------------------------------------------


def _wall(naive: datetime, tz: ZoneInfo) -> float | None:
    """Epoch seconds of a wall time in ``tz``: its first occurrence, or ``None`` if the
    wall time does not exist (a spring-forward gap)."""
    aware = naive.replace(tzinfo=tz, fold=0)
    back = aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None)
    if back != naive:
        return None
    return aware.timestamp()


def _cron_times(expr: str, tz: ZoneInfo, start: float, forward: bool) -> Iterator[float]:
    """Fire times of ``expr`` after (or, backwards, at or before) ``start``, in order."""
    from croniter import croniter

    local = datetime.fromtimestamp(start, tz)
    base = local.replace(tzinfo=None, fold=0)
    if not forward:
        base += timedelta(seconds=1)  # get_prev is strict; include a fire at ``start``
        if local.fold:  # the repeated hour: first-occurrence fires lie ahead on the wall
            base += local.replace(fold=0).utcoffset() - local.utcoffset()  # type: ignore[operator]
    it = croniter(expr, base)
    seen: float | None = None
    for _ in range(_CRON_STEPS):
        naive = it.get_next(datetime) if forward else it.get_prev(datetime)
        when = _wall(naive, tz)
        if when is None:
            continue  # spring forward: this wall time does not exist today
        if (forward and when <= start) or (not forward and when > start):
            continue
        if seen is not None and when == seen:
            continue
        seen = when
        yield when


def next_fire(trigger: dict[str, Any], tz: str, after: float) -> float | None:
    """The first fire time strictly after ``after``, or ``None`` (an ``at`` that passed)."""
    if "cron" in trigger:
        return next(_cron_times(trigger["cron"], zone(tz), after, True), None)
    if "every" in trigger:
        period = float(trigger["every"])
        anchor = float(trigger["anchor"])
        if after < anchor:
            return anchor + period
        return anchor + (math.floor((after - anchor) / period) + 1) * period
    when = float(trigger["at"])
    return when if when > after else None


def next_fires(trigger: dict[str, Any], tz: str, after: float, n: int) -> list[float]:
    """The next ``n`` fire times after ``after``."""
    found: list[float] = []
    when: float | None = after
    while len(found) < n:
        when = next_fire(trigger, tz, when) if when is not None else None
        if when is None:
            break
        found.append(when)
    return found


def _due(trigger: dict[str, Any], tz: str, first: float, now: float, limit: int
         ) -> list[float]:
    """Up to ``limit`` fire times in ``[first, now]``, the latest ones, oldest first."""
    if first > now:
        return []
    if "cron" in trigger:
        latest: list[float] = []
        for when in _cron_times(trigger["cron"], zone(tz), now, False):
            if when < first or len(latest) >= limit:
                break
            latest.append(when)
        return latest[::-1]
    if "every" in trigger:
        period = float(trigger["every"])
        count = math.floor((now - first) / period) + 1
        skip = max(0, count - limit)
        return [first + (skip + i) * period for i in range(count - skip)]
    return [first]


def choose_fires(schedule: Schedule, now: float, previous_running: bool
                 ) -> tuple[list[float], float | None]:
    """The fire times to start at ``now`` and the schedule's next fire time after them.

    Applies catch-up and overlap (see the module docstring). ``previous_running``:
    the schedule's last execution has not ended (for ``overlap: skip``).
    """
    first = schedule.next_fire
    if first is None or first > now:
        return [], first
    due = _due(schedule.trigger, schedule.tz, first, now, CATCH_UP_CAP + 1)
    on_time = [f for f in due if now - f <= MISFIRE_GRACE]
    missed = [f for f in due if now - f > MISFIRE_GRACE]
    if schedule.catch_up == "all":
        fires = due[-CATCH_UP_CAP:]
    elif schedule.catch_up == "one" and missed and not on_time:
        fires = missed[-1:]
    else:
        fires = on_time
    if schedule.overlap != "allow" and fires:
        fires = fires[-1:]
        if schedule.overlap == "skip" and previous_running:
            fires = []
    return fires, next_fire(schedule.trigger, schedule.tz, max(now, due[-1] if due else now))


# -- the stored schedule ------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """One stored schedule. ``version`` counts its writes (compare-and-set).

    ``spec`` is the compiled spec's raw dict as given when the schedule was
    added, so a later change of the file changes nothing. ``pending``: fire times
    a tick has committed to but whose executions may not exist yet (see
    ``runfox.schedules``). ``next_fire`` is ``None`` once an ``at`` has fired.
    """

    name: str
    spec: dict[str, Any]
    trigger: dict[str, Any]
    tz: str = "UTC"
    inputs: dict[str, Any] = field(default_factory=dict)
    next_fire: float | None = None
    paused: bool = False
    catch_up: str = "one"
    overlap: str = "allow"
    last_execution_id: str | None = None
    last_fire: float | None = None
    last_error: str | None = None
    pending: tuple[float, ...] = ()
    version: int = 1
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def due_at(self) -> float | None:
        """When a tick must look at this schedule: now for pending fires, else its next
        fire time unless paused."""
        if self.pending:
            return 0.0
        return None if self.paused else self.next_fire

    def evolve(self, **changes: Any) -> Schedule:
        """A copy with ``changes`` and the next version."""
        return replace(self, version=self.version + 1, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "spec": self.spec, "trigger": self.trigger, "tz": self.tz,
                "inputs": self.inputs, "next_fire": self.next_fire, "paused": self.paused,
                "catch_up": self.catch_up, "overlap": self.overlap,
                "last_execution_id": self.last_execution_id, "last_fire": self.last_fire,
                "last_error": self.last_error, "pending": list(self.pending),
                "version": self.version, "created_at": self.created_at,
                "updated_at": self.updated_at}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schedule:
        return cls(
            name=str(data["name"]), spec=dict(data["spec"]), trigger=dict(data["trigger"]),
            tz=str(data.get("tz", "UTC")), inputs=dict(data.get("inputs") or {}),
            next_fire=None if data.get("next_fire") is None else float(data["next_fire"]),
            paused=bool(data.get("paused", False)), catch_up=str(data.get("catch_up", "one")),
            overlap=str(data.get("overlap", "allow")),
            last_execution_id=data.get("last_execution_id"),
            last_fire=None if data.get("last_fire") is None else float(data["last_fire"]),
            last_error=data.get("last_error"),
            pending=tuple(float(f) for f in data.get("pending") or ()),
            version=int(data.get("version", 1)), created_at=float(data.get("created_at", 0)),
            updated_at=float(data.get("updated_at", 0)))


def check_policies(catch_up: str, overlap: str) -> None:
    if catch_up not in CATCH_UP:
        raise ScheduleError("catch_up", f"{catch_up!r} is not one of {', '.join(CATCH_UP)}")
    if overlap not in OVERLAP:
        raise ScheduleError("overlap", f"{overlap!r} is not one of {', '.join(OVERLAP)}")
