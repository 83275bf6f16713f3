"""``runfox schedule ...`` and ``runfox scheduler``: durable schedules from the shell."""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..schedule import Schedule, describe_trigger, iso, make_trigger, next_fires
from ..schedules import ScheduleNotFound, Schedules
from .commands import close_backend, open_backend, read_spec, spec_inputs
from .exits import EXIT_COMPLETE, UsageError

__all__ = ["add", "list_schedules", "next_times", "pause", "remove", "resume", "scheduler",
           "show"]

logger = logging.getLogger("runfox.cli")


def _with_schedules(args: argparse.Namespace, work: Callable[[Schedules], int]) -> int:
    backend = open_backend(args.backend)
    try:
        try:
            return work(Schedules(backend))
        except ScheduleNotFound as exc:
            raise UsageError(str(exc)) from exc
    finally:
        close_backend(backend)


def _row(schedule: Schedule) -> dict[str, Any]:
    state = "paused" if schedule.paused else ("done" if schedule.next_fire is None
                                              else "active")
    return {
        "name": schedule.name,
        "trigger": describe_trigger(schedule.trigger, schedule.tz),
        "state": state,
        "next_fire": None if schedule.next_fire is None or schedule.paused
        else iso(schedule.next_fire, schedule.tz),
        "catch_up": schedule.catch_up,
        "overlap": schedule.overlap,
        "last_execution_id": schedule.last_execution_id,
        "last_fire": None if schedule.last_fire is None else iso(schedule.last_fire,
                                                                  schedule.tz),
        "last_error": schedule.last_error,
        "spec": schedule.spec.get("name"),
        "inputs": schedule.inputs,
    }


def add(args: argparse.Namespace) -> int:
    """Store a new schedule; print its next fire time."""
    plan = read_spec(args.spec)
    inputs = spec_inputs(plan, args)

    def work(schedules: Schedules) -> int:
        schedule = schedules.add(args.name, plan, cron=args.cron, every=args.every, at=args.at,
                                 tz=args.tz, inputs=inputs, catch_up=args.catch_up,
                                 overlap=args.overlap)
        when = "never" if schedule.next_fire is None else iso(schedule.next_fire, schedule.tz)
        print(f"schedule {schedule.name}: {describe_trigger(schedule.trigger, schedule.tz)}, "
              f"next fire {when}")
        return EXIT_COMPLETE

    return _with_schedules(args, work)


def list_schedules(args: argparse.Namespace) -> int:
    """One line per schedule (``--json``: an array), errors included."""
    def work(schedules: Schedules) -> int:
        rows = [_row(s) for s in schedules.list()]
        if args.json:
            print(json.dumps(rows, indent=2))
            return EXIT_COMPLETE
        for row in rows:
            line = (f"{row['name']}\t{row['state']}\t{row['trigger']}\t"
                    f"next {row['next_fire'] or '-'}\tlast {row['last_execution_id'] or '-'}")
            if row["last_error"]:
                line += f"\terror: {row['last_error']}"
            print(line)
        return EXIT_COMPLETE

    return _with_schedules(args, work)


def show(args: argparse.Namespace) -> int:
    """One schedule as JSON."""
    def work(schedules: Schedules) -> int:
        print(json.dumps(_row(schedules.get(args.name)), indent=2))
        return EXIT_COMPLETE

    return _with_schedules(args, work)


def pause(args: argparse.Namespace) -> int:
    return _with_schedules(args, lambda s: _done(f"schedule {s.pause(args.name).name}: paused"))


def resume(args: argparse.Namespace) -> int:
    def work(schedules: Schedules) -> int:
        schedule = schedules.resume(args.name)
        when = "never" if schedule.next_fire is None else iso(schedule.next_fire, schedule.tz)
        return _done(f"schedule {schedule.name}: resumed, next fire {when}")

    return _with_schedules(args, work)


def remove(args: argparse.Namespace) -> int:
    def work(schedules: Schedules) -> int:
        schedules.remove(args.name)
        return _done(f"schedule {args.name}: removed")

    return _with_schedules(args, work)


def _done(message: str) -> int:
    print(message)
    return EXIT_COMPLETE


def next_times(args: argparse.Namespace) -> int:
    """The next N fire times of a stored schedule, or of --cron/--every without one."""
    if args.n < 1:
        raise UsageError("-n must be >= 1")
    adhoc = args.cron is not None or args.every is not None
    if adhoc == (args.name is not None):
        raise UsageError("give a schedule NAME or --cron/--every (one of them)")
    if adhoc:
        now = time.time()
        trigger = make_trigger(cron=args.cron, every=args.every, tz=args.tz, now=now)
        times = next_fires(trigger, args.tz, now, args.n)
        tz = args.tz
    else:
        def work(schedules: Schedules) -> int:
            found.append(schedules.get(args.name))
            times.extend(schedules.next(args.name, args.n))
            return EXIT_COMPLETE

        found: list[Schedule] = []
        times = []
        _with_schedules(args, work)
        tz = found[0].tz
    for when in times:
        print(iso(when, tz))
    return EXIT_COMPLETE


def scheduler(args: argparse.Namespace) -> int:
    """Fire due schedules every --interval seconds until SIGTERM/SIGINT (or --idle-timeout)."""
    import signal

    backend = open_backend(args.backend)
    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set())
                for signum in (signal.SIGTERM, signal.SIGINT)}
    started = time.monotonic()
    try:
        schedules = Schedules(backend)
        logger.info("scheduler: firing schedules of %s every %gs", args.backend_shown,
                    args.interval)
        while not stop.is_set():
            try:
                for fire in schedules.tick():
                    logger.info("schedule %r fired %s", fire.name, fire.workflow_execution_id)
            except Exception as exc:  # an outage: keep going
                logger.warning("scheduler: tick failed: %s", exc)
            if args.idle_timeout is not None and time.monotonic() - started >= args.idle_timeout:
                break
            stop.wait(args.interval)
        return EXIT_COMPLETE
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        close_backend(backend)
