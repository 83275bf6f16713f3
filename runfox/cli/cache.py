"""``runfox cache list|show|clear`` and ``runfox rerun``: the step cache from the shell."""

from __future__ import annotations

import argparse
import json
import sys
import time

from ..backend import Backend, Cache, InProcessRunner
from ..results import Complete
from ..worker import load_executor
from ..workflow import Workflow
from .commands import (
    close_backend,
    describe_end,
    executor_ref,
    exit_code,
    open_backend,
    parse_inputs,
    resolve_id,
)
from .exits import EXIT_COMPLETE, EXIT_TIMEOUT, UsageError

__all__ = ["cache_clear", "cache_list", "cache_show", "rerun"]


def _cache_of(backend: Backend, shown: str) -> Cache:
    if backend.cache is None:
        raise UsageError(f"{shown} keeps no step cache")
    return backend.cache


def cache_list(args: argparse.Namespace) -> int:
    """One line per entry (key, fn, version, age), newest first; ``--json`` for all."""
    backend = open_backend(args.backend)
    try:
        entries = _cache_of(backend, args.backend_shown).list(args.fn)
    finally:
        close_backend(backend)
    if args.json:
        print(json.dumps([{k: v for k, v in e.to_dict().items() if k != "output"}
                          for e in entries], sort_keys=True))
        return EXIT_COMPLETE
    now = time.time()
    for e in entries:
        print(f"{e.key}  {e.fn}  version={json.dumps(e.version)}  "
              f"age={max(0.0, now - e.stored_at):.0f}s")
    print(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}", file=sys.stderr)
    return EXIT_COMPLETE


def cache_show(args: argparse.Namespace) -> int:
    """The entry of KEY as JSON (with its output)."""
    backend = open_backend(args.backend)
    try:
        entry = _cache_of(backend, args.backend_shown).show(args.key)
    finally:
        close_backend(backend)
    if entry is None:
        raise UsageError(f"no cache entry {args.key!r}")
    print(json.dumps(entry.to_dict(), indent=2, sort_keys=True))
    return EXIT_COMPLETE


def cache_clear(args: argparse.Namespace) -> int:
    """Delete every entry, or those of ``--fn``."""
    backend = open_backend(args.backend)
    try:
        gone = _cache_of(backend, args.backend_shown).clear(args.fn)
    finally:
        close_backend(backend)
    print(json.dumps({"deleted": gone}))
    return EXIT_COMPLETE


def rerun(args: argparse.Namespace) -> int:
    """A new execution of ID's spec and inputs (``--input`` overrides), run here with
    ``--executor`` (exit code as ``run``) or started for workers; prints which steps
    ran and which came from the cache."""
    ref = executor_ref(args, required=False)
    shared = open_backend(args.backend)
    try:
        wf_id = resolve_id(shared, args.id)
        overrides = parse_inputs(args.input, None)
        if ref is None:
            if isinstance(shared.runner, InProcessRunner):
                raise UsageError(f"{args.backend_shown} has no shared queue: give --executor")
            new_id = shared.rerun(wf_id, overrides)
            shared.apply_and_advance(new_id)
            print(json.dumps({"id": new_id, "rerun_of": wf_id}))
            return EXIT_COMPLETE
        local = Backend(store=shared.store, runner=InProcessRunner(),
                        executor=load_executor(ref), poll_interval=0.02)
        try:
            done = Workflow(wf_id, local).rerun(overrides, timeout=args.timeout)
        except TimeoutError:
            print(f"runfox: the rerun of {wf_id} did not finish within {args.timeout:g}s; "
                  "it is left as it is", file=sys.stderr)
            return EXIT_TIMEOUT
        new_id = done.workflow.id
        print(f"runfox: rerun of {wf_id} is {new_id}: ran {', '.join(done.ran) or 'nothing'}"
              f"; from the cache: {', '.join(done.cached) or 'nothing'}", file=sys.stderr)
        if not isinstance(done.result, Complete):
            print(describe_end(new_id, done.result), file=sys.stderr)
        print(json.dumps({"id": new_id, "rerun_of": wf_id, "ran": done.ran,
                          "cached": done.cached, "outcome": done.result.outcome},
                         sort_keys=True))
        return exit_code(done.result)
    finally:
        close_backend(shared)
