"""The ``runfox`` subcommands. Each takes the parsed arguments and returns an exit code.

Errors are raised, not printed: ``runfox.cli.main`` turns them into one line on
stderr and the documented exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from collections.abc import Collection
from pathlib import Path
from typing import Any

from .. import graph as _graph
from ..backend import Backend, InProcessRunner
from ..backend.urls import parts_from_url
from ..errors import BackendError, SpecError, SpecProblem
from ..records import WorkflowRecord
from ..results import Complete, Failed, Halt, Terminal
from ..spec import WorkflowSpec, compile_spec, load_spec, parse_yaml
from ..spec_schema import schema_text
from ..status import StepStatus
from ..worker import Worker, WorkerStats, load_executor
from ..workflow import Workflow
from . import render
from .exits import EXIT_COMPLETE, EXIT_FAILED, EXIT_HALTED, EXIT_TIMEOUT, UsageError

__all__ = ["cancel", "graph", "list_executions", "redrive", "resolve_id", "run", "schema",
           "start", "status", "worker", "workers"]

logger = logging.getLogger("runfox.cli")


# -- argument helpers ------------------------------------------------------------------


def read_spec(source: str) -> WorkflowSpec:
    """Load SPEC: a YAML file, or ``-`` for standard input."""
    if source == "-":
        return compile_spec(parse_yaml(sys.stdin.read(), "<stdin>"), source="<stdin>")
    path = Path(source)
    if not path.is_file():
        raise SpecError([SpecProblem(source, "no such file")])
    return load_spec(path)


def parse_inputs(pairs: list[str] | None, document: str | None,
                 text_inputs: Collection[str] = ()) -> dict[str, Any]:
    """``--inputs JSON`` (or ``@file``) overlaid with each ``--input KEY=VALUE``.

    A VALUE that parses as JSON is used as such (``n=3`` is a number,
    ``tags=["a"]`` a list); anything else is kept as a string. Keys in
    ``text_inputs`` (inputs the spec declares as strings) keep VALUE as it was
    typed: ``--input zip=01234`` stays ``"01234"``.
    """
    inputs: dict[str, Any] = {}
    if document is not None:
        text = document
        if document.startswith("@"):
            try:
                text = Path(document[1:]).read_text(encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"--inputs {document}: {exc.strerror}") from exc
        try:
            loaded = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"--inputs is not valid JSON: {exc}") from exc
        except RecursionError:
            raise UsageError("--inputs is nested too deeply to read") from None
        if not isinstance(loaded, dict):
            raise UsageError("--inputs must be a JSON object")
        inputs.update(loaded)
    for pair in pairs or ():
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--input {pair!r} must look like KEY=VALUE")
        if key in text_inputs:
            inputs[key] = raw
            continue
        try:
            inputs[key] = json.loads(raw)
        except ValueError:
            inputs[key] = raw
        except RecursionError:
            raise UsageError(f"--input {key}: the value is nested too deeply to read") from None
    return inputs


def spec_inputs(plan: WorkflowSpec, args: argparse.Namespace) -> dict[str, Any]:
    """The ``--input``/``--inputs`` of ``run``/``start``, declared string inputs kept as text."""
    declared = plan.declared_inputs or {}
    return parse_inputs(args.input, args.inputs,
                        {name for name, decl in declared.items() if decl.takes_text})


def describe_inputs(plan: WorkflowSpec, source: str) -> str:
    """``--help-inputs``: one line per declared input, aligned."""
    declared = plan.declared_inputs
    if declared is None:
        return f"{source} declares no inputs: any --input is accepted"
    if not declared:
        return f"{source} declares no inputs: none may be given"
    rows = []
    for name, decl in declared.items():
        kind = decl.type or ("one of " + "|".join(json.dumps(v) for v in decl.enum)
                             if decl.enum is not None else "any")
        if decl.type is not None and decl.enum is not None:
            kind += " (one of " + "|".join(json.dumps(v) for v in decl.enum) + ")"
        need = ("default " + json.dumps(decl.default) if decl.has_default
                else "required" if decl.required else "optional")
        rows.append((name, kind, need, decl.description))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"inputs of {source}:"]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append(("  " + "  ".join([*cells, row[3]])).rstrip())
    return "\n".join(lines)


def executor_ref(args: argparse.Namespace, required: bool) -> str | None:
    ref: str | None = args.executor
    if ref is None and required:
        raise UsageError("--executor MODULE:ATTR is required (or set $RUNFOX_EXECUTOR)")
    if ref is not None:
        try:
            load_executor(ref)  # fail now, with one line, not inside a worker thread
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    return ref


def open_backend(url: str, **options: Any) -> Backend:
    store, runner = parts_from_url(url, **options)
    return Backend(store=store, runner=runner)


def close_backend(backend: Backend) -> None:
    backend.runner.close()
    backend.store.close()


def exit_code(result: Terminal) -> int:
    if isinstance(result, Complete):
        return EXIT_COMPLETE
    if isinstance(result, Halt):
        return EXIT_HALTED
    return EXIT_FAILED  # failed or cancelled


def describe_end(wf_id: str, result: Terminal) -> str:
    """One line for an execution that did not complete: its id, the step and the error."""
    line = f"runfox: execution {wf_id} {result.status.value}"
    outcome = result.outcome if isinstance(result.outcome, dict) else {}
    if isinstance(result, Failed):
        error = outcome.get("error")
        step = outcome.get("step") or (error.get("step") if isinstance(error, dict) else None)
        if step:
            line += f" at step {step!r}"
        if isinstance(error, dict):
            message = " ".join(str(error.get("message", "")).split())
            line += f": {error.get('type', 'Error')}: {message}"
    return line


def abandon(backend: Backend, wf_id: str, exc: BaseException, command: str) -> str:
    """Fail an execution this command cannot go on with; say where it was left.

    Called when ``run``/``start`` raised after creating the execution, so that
    it is not left in progress with nobody driving it. If the store cannot be
    reached either, the line says so and the execution stays as it was.
    """
    head = f"runfox: execution {wf_id} stopped by {type(exc).__name__}"
    try:
        record = backend.load(wf_id)
        running = _running(record)
        if not record.status.is_terminal:
            error = _graph.error_of(exc, where=f"runfox {command}")
            backend.fail_execution(wf_id, error)
            record = backend.load(wf_id)
    except Exception as again:
        return (f"{head}; it may be left in progress: it could not be marked failed "
                f"({type(again).__name__}: {' '.join(str(again).split())})")
    where = f" (step(s) in progress: {', '.join(running)})" if running else ""
    return f"{head}{where}; it was left {record.status.value}"


def _running(record: WorkflowRecord) -> list[str]:
    return [s.id for s in record.steps.values() if s.status is StepStatus.IN_PROGRESS]


# -- run / start -------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Create an execution and drive it to its end; print the outcome as JSON."""
    plan = read_spec(args.spec)
    if args.help_inputs:
        print(describe_inputs(plan, args.spec))
        return EXIT_COMPLETE
    inputs = spec_inputs(plan, args)
    targets = getattr(args, "target", None)
    if targets:
        plan.needed_by(targets)  # an unknown target: UnknownStepError before anything exists
    ref = executor_ref(args, required=False)
    if args.workers < 1:
        raise UsageError("--workers must be >= 1")
    shared = open_backend(args.backend)
    if ref is None:
        if isinstance(shared.runner, InProcessRunner):
            close_backend(shared)
            raise UsageError(f"{args.backend_shown} has no shared queue: give --executor")
        backend = Backend(store=shared.store, runner=shared.runner, poll_interval=0.1)
        local = None
    else:
        # The jobs of this execution stay in this process (an in-process queue), so
        # the local executor never takes jobs of other executions in a shared
        # database; the record itself is in the --backend store.
        shared.runner.close()
        backend = Backend(store=shared.store, runner=InProcessRunner(), poll_interval=0.02)
        local = Worker(backend, ref, concurrency=args.workers, drive=False,
                       poll_interval=0.005, register=False)  # its queue is private
    progress = None if args.quiet else render.Progress()
    thread = None
    try:
        wf = Workflow.from_dict(plan, backend, inputs)
        print(f"runfox: execution {wf.id}", file=sys.stderr)
        if local is None:
            print("runfox: no --executor: waiting for `runfox worker` processes to run "
                  "the jobs", file=sys.stderr)
        else:
            thread = threading.Thread(target=local.run, name="runfox-local-worker",
                                      daemon=True)
            thread.start()
        on_progress = None
        if progress is not None:
            def on_progress(w: Workflow) -> None:
                progress.update(render.progress_counts(w.record))
        try:
            result = wf.run(timeout=args.timeout, on_progress=on_progress, targets=targets)
        except TimeoutError:
            if progress is not None:
                progress.finish()
            print(f"runfox: {wf.id} did not finish within {args.timeout:g}s; "
                  "it is left as it is", file=sys.stderr)
            return EXIT_TIMEOUT
        except KeyboardInterrupt:
            if progress is not None:
                progress.finish()
            print(f"runfox: execution {wf.id} interrupted; it is left as it is "
                  "(`runfox status` shows it, `runfox cancel` ends it)", file=sys.stderr)
            raise
        except Exception as exc:
            if progress is not None:
                progress.finish()
            if local is not None:
                local.stop()  # no more jobs of this execution run here
            print(abandon(backend, wf.id, exc, "run"), file=sys.stderr)
            raise
        if progress is not None:
            progress.update(render.progress_counts(wf.record))
            progress.finish()
        if not isinstance(result, Complete):
            print(describe_end(wf.id, result), file=sys.stderr)
        print(json.dumps(result.outcome, sort_keys=True))
        return exit_code(result)
    finally:
        if local is not None:
            local.stop()
        if thread is not None:
            thread.join(timeout=10)
        backend.store.close()
        backend.runner.close()


def start(args: argparse.Namespace) -> int:
    """Create an execution and dispatch its first jobs; print its id last."""
    plan = read_spec(args.spec)
    if args.help_inputs:
        print(describe_inputs(plan, args.spec))
        return EXIT_COMPLETE
    inputs = spec_inputs(plan, args)
    backend = open_backend(args.backend)
    try:
        if isinstance(backend.runner, InProcessRunner):
            raise UsageError(f"{args.backend_shown} is private to this process: `runfox start` "
                             "needs a shared backend such as sqlite:///runfox.db")
        key = getattr(args, "key", None)
        if getattr(args, "queue", False):
            if key is not None:
                raise UsageError("--queue and --key do not go together: a queued start "
                                 "has no idempotency key")
            print(backend.submit(plan, inputs))
            return EXIT_COMPLETE
        if key is not None:
            existing = backend.store.key_owner(key)
            if existing is not None:
                print(f"runfox: an execution with key {key!r} exists: {existing}",
                      file=sys.stderr)
                print(existing)
                return EXIT_COMPLETE
        wf_id = backend.create(plan, inputs, key=key)
        try:
            _, first = backend.apply_and_advance(wf_id)  # claims the first steps, dispatches
        except KeyboardInterrupt:
            print(f"runfox: execution {wf_id} interrupted before its first jobs were "
                  "dispatched; it is left as it is", file=sys.stderr)
            raise
        except Exception as exc:
            print(abandon(backend, wf_id, exc, "start"), file=sys.stderr)
            raise
        print(wf_id)
        if isinstance(first, Terminal):  # e.g. a first step whose inputs do not resolve
            if not isinstance(first, Complete):
                print(describe_end(wf_id, first), file=sys.stderr)
            return exit_code(first)
        return EXIT_COMPLETE
    finally:
        close_backend(backend)


# -- worker ------------------------------------------------------------------------------


def worker(args: argparse.Namespace) -> int:
    """Run jobs until SIGTERM/SIGINT (or --idle-timeout / --max-jobs).

    A backend that cannot be opened is a start-up failure (exit 4); once the
    worker runs, outages are ridden out and never end it.
    """
    ref = executor_ref(args, required=True)
    assert ref is not None
    if args.concurrency < 1:
        raise UsageError("--concurrency must be >= 1")
    if args.max_jobs is not None and args.max_jobs < 1:
        raise UsageError("--max-jobs must be >= 1")
    backend = open_backend(args.backend)
    metrics = None
    try:
        if isinstance(backend.runner, InProcessRunner):
            raise UsageError(f"{args.backend_shown} is private to this process: a worker needs "
                             "a shared backend")
        port = getattr(args, "metrics_port", None)
        if port is not None:
            metrics = start_metrics(backend, port, getattr(args, "metrics_host", "127.0.0.1"))
        harness = Worker(backend, ref, concurrency=args.concurrency, processes=args.processes,
                         lease=args.lease, poll_interval=args.poll_interval,
                         drive=not args.no_drive, sweep_interval=args.sweep_interval,
                         stale_after=args.stale_after,
                         schedule_interval=None if args.no_schedules
                         else args.schedule_interval, metrics=metrics)
        logger.info("worker %s: serving %s with %s (concurrency %d%s, lease %gs)",
                    harness.name, args.backend_shown, ref, args.concurrency,
                    ", processes" if args.processes else "", args.lease)
        stats = serve_until_signalled(harness, args.idle_timeout, args.max_jobs)
        logger.info("worker %s: stopped after %d jobs (%d failed attempts, %d drive errors, "
                    "%d jobs reported lost, %d backend outages ridden out)", harness.name,
                    stats.jobs, stats.failed, stats.drive_errors, stats.lost, stats.outages)
        return EXIT_COMPLETE
    finally:
        if metrics is not None:
            metrics.close()
        close_backend(backend)


def start_metrics(backend: Backend, port: int, host: str = "127.0.0.1") -> Any:
    """Serve Prometheus metrics for ``backend`` (``runfox.metrics``); a missing
    prometheus-client or a port in use is a usage error naming the fix."""
    from ..metrics import WorkerMetrics

    try:
        metrics = WorkerMetrics(backend)
    except BackendError as exc:
        raise UsageError(f"--metrics-port: {exc}") from exc
    try:
        bound = metrics.serve(port, host)
    except OSError as exc:
        raise UsageError(f"--metrics-port {port}: cannot listen on {host}:{port} "
                         f"({exc.strerror or exc})") from exc
    logger.info("metrics on http://%s:%d/metrics", host, bound)
    return metrics


#: Longest wait of ``serve_until_signalled``'s main thread between looks at the loop
#: (a signal or the loop's end wakes it sooner; this only bounds a missed wake-up).
SIGNAL_WAIT = 30.0


def serve_until_signalled(harness: Worker, idle_timeout: float | None,
                          max_jobs: int | None) -> WorkerStats:
    """Run the worker; the first SIGTERM/SIGINT stops claiming and lets running jobs
    finish, a second one releases them.

    The loop runs in its own thread and the signal handler only records the
    signal: ``Worker.stop`` sets an Event the loop waits on, and setting it from a
    handler that interrupted that very wait (in the same thread) can deadlock.
    The main thread turns recorded signals into ``stop()`` calls instead. It
    sleeps on a socket pair until something happens: the interpreter writes a
    byte to it when a signal arrives (``signal.set_wakeup_fd``, which wakes the
    main thread even when another thread took the signal), the handler once it
    recorded the signal, the loop thread when it ends; so an idle worker's main
    thread wakes only then, or every ``SIGNAL_WAIT`` seconds at most.
    """
    received: list[int] = []
    outcome: dict[str, Any] = {}
    ended = threading.Event()
    bell, ringer = socket.socketpair()
    bell.setblocking(False)
    ringer.setblocking(False)  # set_wakeup_fd needs a descriptor that never blocks

    def record(signum: int, frame: types.FrameType | None) -> None:
        received.append(signum)  # nothing that takes a lock
        # The interpreter's byte may have been read before this ran: ring again.
        with contextlib.suppress(OSError):
            ringer.send(b"\0")

    def serve() -> None:
        try:
            outcome["stats"] = harness.run(idle_timeout=idle_timeout, max_jobs=max_jobs)
        except BaseException as exc:  # re-raised in the main thread
            outcome["error"] = exc
        finally:
            ended.set()  # before the ring: the thread is still alive a moment after it
            with contextlib.suppress(OSError):  # full (being rung anyway) or closed
                ringer.send(b"\0")

    previous = {signum: signal.signal(signum, record)
                for signum in (signal.SIGTERM, signal.SIGINT)}
    previous_fd = signal.set_wakeup_fd(ringer.fileno(), warn_on_full_buffer=False)
    loop = threading.Thread(target=serve, name="runfox-worker-loop")
    try:
        loop.start()
        handled = 0
        while not ended.is_set():
            if handled == len(received):
                select.select([bell], [], [], SIGNAL_WAIT)
            try:
                while bell.recv(512):
                    pass
            except (BlockingIOError, InterruptedError):
                pass
            for signum in received[handled:]:
                handled += 1
                name = signal.Signals(signum).name
                if handled == 1:
                    logger.info("%s: finishing running jobs (signal again to release them)",
                                name)
                    harness.stop()
                else:
                    logger.info("%s: releasing running jobs", name)
                    harness.stop(release=True)
        loop.join()
    finally:
        signal.set_wakeup_fd(previous_fd)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        bell.close()
        ringer.close()
    if "error" in outcome:
        raise outcome["error"]
    stats: WorkerStats = outcome["stats"]
    return stats


# -- inspection ----------------------------------------------------------------------------


#: How many candidates an ambiguous id lists.
CANDIDATES_SHOWN = 5


def resolve_id(backend: Backend, text: str, option: str | None = None) -> str:
    """The execution ``text`` names: its whole key, or a prefix of exactly one key
    or of exactly one execution id (``20261130T...``, as people copy it).

    Raises:
        UsageError: no execution matches, or several do (up to five are listed).
    """
    found = backend.store.find(text, limit=CANDIDATES_SHOWN + 1)
    if found and found[0] == text:
        return text
    if len(found) == 1:
        return found[0]
    where = f"{option}: " if option else ""
    if not found:
        raise UsageError(f"{where}no execution matches {text!r}")
    more = ["(and more)"] if len(found) > CANDIDATES_SHOWN else []
    raise UsageError(f"{where}{text!r} matches several executions; give more of it",
                     [*found[:CANDIDATES_SHOWN], *more])


def live_view(backend: Backend, record: WorkflowRecord) -> dict[str, render.StepLive]:
    """Where the jobs of ``record``'s in-progress steps are (runner and worker registry).

    Either source failing (a store without a registry, a runner that cannot say)
    leaves that part out rather than failing ``runfox status``."""
    if not any(s.status is StepStatus.IN_PROGRESS for s in record.steps.values()):
        return {}
    try:
        jobs = backend.runner.job_states(record.workflow_execution_id)
    except Exception as exc:
        logger.debug("job states unavailable: %s", exc)
        jobs = {}
    try:
        rows = backend.store.workers().list()
    except Exception as exc:
        logger.debug("worker registry unavailable: %s", exc)
        rows = []
    return render.live_steps(record, jobs, rows, time.time())


def _status_block(backend: Backend, wf_id: str, args: argparse.Namespace
                  ) -> tuple[str, WorkflowRecord]:
    record = backend.load(wf_id)
    offloader = backend.store.payloads()  # values over its threshold: size and preview
    threshold = offloader.threshold if offloader is not None else None
    if getattr(args, "step", None) is not None:
        return render.step_detail(record, args.step, args.json, threshold), record
    live = live_view(backend, record)
    if args.json:
        data = render.status_json(record, live, threshold)
        if record.defects:
            data["defects"] = [d.to_dict() for d in record.defects]
        return json.dumps(data, indent=2, sort_keys=False), record
    return "\n".join([render.status_text(record, live, threshold), *explain(record)]), record


def status(args: argparse.Namespace) -> int:
    """Show one execution; ``--watch`` redraws it every ``--interval`` seconds until
    it ends (clear and redraw on a terminal, blocks separated by a blank line
    otherwise)."""
    backend = open_backend(args.backend)
    try:
        try:
            wf_id = resolve_id(backend, args.id)
        except UsageError:
            queued = backend.queued_start(args.id) if "#" in args.id else None
            if queued is None:
                raise
            # Submitted (``runfox start --queue``), not created yet: say so.
            if getattr(args, "json", False):
                print(json.dumps({"id": args.id, "status": "queued",
                                  "start_job": queued.state,
                                  "deliveries": queued.deliveries}, indent=2))
            else:
                print(f"{args.id}: queued, not created yet: its start job is "
                      f"{queued.state} (a worker creates the execution when it takes it)")
            return EXIT_COMPLETE
        text, record = _status_block(backend, wf_id, args)
        if not getattr(args, "watch", False):
            print(text)
            return EXIT_COMPLETE
        tty = sys.stdout.isatty()
        while True:
            if tty:
                sys.stdout.write("\x1b[H\x1b[2J")
            print(text + ("" if tty else "\n"), flush=True)
            if record.status.is_terminal:
                return EXIT_COMPLETE
            time.sleep(args.interval)
            text, record = _status_block(backend, wf_id, args)
    finally:
        close_backend(backend)


def workers(args: argparse.Namespace) -> int:
    """List the workers registered in the backend; dead ones (no heartbeat for two
    intervals) are marked."""
    backend = open_backend(args.backend)
    try:
        try:
            registry = backend.store.workers()
        except BackendError as exc:
            raise UsageError(f"{args.backend_shown}: {exc}") from exc
        rows = registry.list()
    finally:
        close_backend(backend)
    now = time.time()
    if args.json:
        print(json.dumps(render.workers_json(rows, now), indent=2))
    else:
        print(render.workers_text(rows, now))
    return EXIT_COMPLETE


def explain(record: WorkflowRecord) -> list[str]:
    """Notes for ``runfox status`` on an execution ended (or to be ended) by a fault."""
    notes = []
    if record.defects:
        found = "; ".join(f"{d.where}: {d.message}" for d in record.defects[:5])
        more = f" (and {len(record.defects) - 5} more)" if len(record.defects) > 5 else ""
        then = ("it has finished, so they are left as stored" if record.status.is_terminal
                else "the next transition fails the execution and keeps them in its outcome")
        notes.append(f"note: the stored record has values of the wrong shape: {found}{more}; "
                     f"{then}")
    error = record.outcome.get("error") if isinstance(record.outcome, dict) else None
    if record.status.value == "failed" and isinstance(error, dict) and "step" not in (
            record.outcome or {}):
        kind, where = error.get("type"), error.get("where")
        if kind == "CorruptRecord":
            notes.append(f"note: failed because its stored record was unusable at {where}; "
                         "the stored value is kept in the outcome under error.stored")
        elif isinstance(where, str) and where.startswith("runfox "):
            notes.append(f"note: failed because `{where}` stopped on {kind} while driving it")
        elif where:
            notes.append(f"note: failed because a transition raised {kind} at {where} "
                         "(the log of the process that ran it has the traceback)")
    return ["", *notes] if notes else []


def redrive(args: argparse.Namespace) -> int:
    """Reopen the steps of an ended execution that did not complete; with --executor,
    run them here to the end (exit code as ``run``), else leave them to workers."""
    ref = executor_ref(args, required=False)
    shared = open_backend(args.backend)
    try:
        wf_id = resolve_id(shared, args.id)
        if ref is None:
            if isinstance(shared.runner, InProcessRunner):
                raise UsageError(f"{args.backend_shown} has no shared queue: give --executor")
            reopened = shared.redrive(wf_id)
            print(f"runfox: execution {wf_id}: reopened {', '.join(reopened) or 'nothing'}; "
                  "`runfox worker` processes run them", file=sys.stderr)
            print(json.dumps({"id": wf_id, "reopened": reopened}))
            return EXIT_COMPLETE
        local = Backend(store=shared.store, runner=InProcessRunner(),
                        executor=load_executor(ref), poll_interval=0.02)
        reopened = local.redrive(wf_id)
        print(f"runfox: execution {wf_id}: reopened {', '.join(reopened) or 'nothing'}",
              file=sys.stderr)
        try:
            result = Workflow(wf_id, local).run(timeout=args.timeout)
        except TimeoutError:
            print(f"runfox: {wf_id} did not finish within {args.timeout:g}s; it is left as "
                  "it is", file=sys.stderr)
            return EXIT_TIMEOUT
        if not isinstance(result, Complete):
            print(describe_end(wf_id, result), file=sys.stderr)
        print(json.dumps(result.outcome, sort_keys=True))
        return exit_code(result)
    finally:
        close_backend(shared)


def list_executions(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise UsageError("--limit must be >= 1")
    backend = open_backend(args.backend)
    try:
        summaries = backend.store.list_executions(status=args.status, limit=args.limit)
    finally:
        close_backend(backend)
    print(render.execution_list(summaries, args.json))
    return EXIT_COMPLETE


def cancel(args: argparse.Namespace) -> int:
    backend = open_backend(args.backend)
    try:
        wf_id = resolve_id(backend, args.id)
        before = backend.load(wf_id).status
        backend.cancel(wf_id, args.reason)
        after = backend.load(wf_id).status
    finally:
        close_backend(backend)
    if before.is_terminal:
        print(f"{wf_id}: already {before.value}; nothing to cancel")
    else:
        print(f"{wf_id}: {after.value}")
    return EXIT_COMPLETE


def graph(args: argparse.Namespace) -> int:
    plan = read_spec(args.spec)
    record = None
    if args.execution is not None:
        backend = open_backend(args.backend)
        try:
            record = backend.load(resolve_id(backend, args.execution, "--execution"))
        finally:
            close_backend(backend)
        if record.workflow_id != plan.workflow_id:
            raise UsageError(f"execution {record.workflow_execution_id} runs another definition "
                             f"(workflow {record.workflow_id}, {args.spec} is "
                             f"{plan.workflow_id})")
    rankdir = getattr(args, "rankdir", "TB")
    if args.format == "mermaid":
        print(render.graph_mermaid(plan, record, rankdir))
        return EXIT_COMPLETE
    source = render.graph_dot(plan, record, rankdir)
    if args.format == "dot":
        print(source)
        return EXIT_COMPLETE
    sys.stdout.write(dot_to(source, args.format))
    return EXIT_COMPLETE


def dot_to(source: str, fmt: str) -> str:
    """Run Graphviz's ``dot -T<fmt>`` on ``source``.

    Raises:
        UsageError: ``dot`` is not on PATH (the message says how to get it) or failed.
    """
    dot = shutil.which("dot")
    if dot is None:
        raise UsageError(f"--format {fmt} needs Graphviz's `dot` program, which is not on "
                         "PATH: install Graphviz (apt install graphviz, brew install "
                         "graphviz), or print the source with --format dot")
    done = subprocess.run([dot, f"-T{fmt}"], input=source, capture_output=True, text=True,
                          timeout=60, check=False)
    if done.returncode != 0:
        raise UsageError(f"dot -T{fmt} failed: {' '.join(done.stderr.split())[:300]}")
    return done.stdout


# -- schema -------------------------------------------------------------------------------


def schema(args: argparse.Namespace) -> int:
    """Print the JSON Schema of spec files (the text shipped as runfox/spec.schema.json)."""
    sys.stdout.write(schema_text())
    return EXIT_COMPLETE
