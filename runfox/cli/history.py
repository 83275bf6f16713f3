"""``runfox history`` and ``runfox prune``: an execution's events, and retention.

    runfox history ID [--json] [--backend URL]
    runfox prune --older-than 30d [--status complete,failed,...] [--batch N]
                 [--backend URL]
"""

from __future__ import annotations

import argparse
import json
import re
import time

from ..history import Event
from ..schedule import iso
from ..status import WorkflowStatus
from .commands import close_backend, open_backend, resolve_id
from .exits import EXIT_COMPLETE, UsageError

__all__ = ["history", "parse_age", "parse_statuses", "prune"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` as seconds; ``UsageError`` otherwise."""
    match = _AGE.match(text)
    if match is None:
        raise UsageError(f"--older-than: {text!r} is not an age such as 30d, 12h, 90m, 45s "
                         "or 2w")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_statuses(text: str | None) -> frozenset[WorkflowStatus]:
    """A comma-separated list of finished statuses; every finished one when ``None``."""
    finished = [s for s in WorkflowStatus if s.is_terminal]
    if text is None:
        return frozenset(finished)
    chosen = set()
    for word in (w.strip() for w in text.split(",")):
        if word not in {s.value for s in finished}:
            raise UsageError(f"--status: {word!r} is not a finished status; choose from "
                             f"{', '.join(s.value for s in finished)}")
        chosen.add(WorkflowStatus(word))
    return frozenset(chosen)


def _line(event: Event) -> str:
    return f"{event.version:>5}.{event.index:<3} {iso(event.time)}  {event.describe()}"


def history(args: argparse.Namespace) -> int:
    backend = open_backend(args.backend)
    try:
        wf_id = resolve_id(backend, args.id)
        events = backend.history(wf_id)
    finally:
        close_backend(backend)
    if args.json:
        print(json.dumps([e.to_dict() for e in events], indent=2))
    else:
        print(wf_id)
        print("\n".join(_line(e) for e in events))
    return EXIT_COMPLETE


def prune(args: argparse.Namespace) -> int:
    age = parse_age(args.older_than)
    statuses = parse_statuses(args.status)
    if args.batch < 1:
        raise UsageError("--batch must be >= 1")
    before = time.time() - age
    backend = open_backend(args.backend)
    try:
        removed = backend.prune(before, statuses, batch=args.batch)
    finally:
        close_backend(backend)
    print(f"removed {removed} execution{'s' if removed != 1 else ''} "
          f"({', '.join(sorted(s.value for s in statuses))}) last written before {iso(before)}")
    return EXIT_COMPLETE
