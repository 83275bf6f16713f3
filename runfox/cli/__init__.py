"""``runfox``: the command line.

    runfox run SPEC [--executor MODULE:ATTR] [--input KEY=VALUE ...] [--inputs JSON]
                    [--backend URL] [--workers N] [--timeout S] [--quiet] [--target STEP ...]
    runfox start SPEC [--input KEY=VALUE ...] [--inputs JSON] [--backend URL]
    runfox worker --backend URL --executor MODULE:ATTR [--concurrency N] [--processes]
                  [--lease SECONDS] ...
    runfox status ID [--backend URL] [--json] [--step STEP] [--watch [--interval S]]
    runfox workers [--backend URL] [--json]
    runfox redrive ID [--executor MODULE:ATTR] [--timeout S] [--backend URL]
    runfox list [--status S] [--limit N] [--json] [--backend URL]
    runfox cancel ID [--reason TEXT] [--backend URL]
    runfox history ID [--json] [--backend URL]
    runfox prune --older-than AGE [--status S,...] [--batch N] [--backend URL]
    runfox graph SPEC [--format mermaid|dot|svg] [--execution ID] [--rankdir TB|LR|BT|RL]
    runfox schema
    runfox db upgrade|current [--backend URL]
    runfox ui [--backend URL] [--host 127.0.0.1] [--port 8765]

``runfox run SPEC --help-inputs`` (and ``start``) lists the inputs SPEC declares
and exits 0 without running.

``runfox`` alone prints the help on stderr and exits 2 (a missing command is a
usage error, as argparse treats a missing argument); ``runfox --help`` prints it on
stdout and exits 0; ``runfox --version`` prints the version. ``--backend`` and
``--debug`` may also come before the command (``runfox --backend URL list``); given
in both places, the command's own value wins. ``--backend`` defaults to
``$RUNFOX_BACKEND``, else ``sqlite:///runfox.db`` in the
current directory; ``--executor`` defaults to ``$RUNFOX_EXECUTOR``. The current
directory is searched for the executor's module after installed packages (see
``runfox.execution.load_executor``), so ``--executor tasks:execute`` finds
``./tasks.py`` unless an installed module is called ``tasks``.
Results go to stdout (JSON where a script would read it); progress, logs and
errors go to stderr. An error is one line; ``--debug`` adds the traceback. Exit
codes are listed in ``runfox.cli.exits``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from .. import __version__
from ..backend.urls import default_backend_url, mask_url
from ..errors import BackendError, SpecError, UnknownStepError, WorkflowNotFound
from ..status import WorkflowStatus
from ..worker import DEFAULT_LEASE
from . import cache as cache_cli
from . import commands, db, render
from . import history as history_cli
from . import schedule as schedule_cli
from . import ui as ui_cli
from .exits import EXIT_BACKEND, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, UsageError
from .logs import BatchedHandler, lean_records

__all__ = ["build_parser", "main"]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


_BACKEND_HELP = ("sqlite:///FILE, postgresql+psycopg://..., mysql+pymysql://..., aws://..., "
                 "memory:// or a plug-in's scheme (default: $RUNFOX_BACKEND, else "
                 "sqlite:///runfox.db)")
_DEBUG_HELP = "debug logging, and a traceback on error"

# One example per command, shown at the end of its --help.
_EXAMPLES = {
    "run": ["runfox run hello.yaml --executor tasks:execute --input name=world",
            "runfox run etl.yaml --backend postgresql+psycopg://app@db/runfox"
            "  # jobs go to workers"],
    "start": ['id=$(runfox start etl.yaml --inputs @inputs.json) && runfox status "$id"'],
    "worker": ["runfox worker --backend sqlite:///runfox.db --executor tasks:execute "
               "--concurrency 4"],
    "status": ['runfox status "$(runfox start etl.yaml)" --json',
               'runfox status 20261130T0915 --watch'],
    "list": ["runfox list --status in_progress --limit 10"],
    "workers": ["runfox workers --json"],
    "cancel": ['runfox cancel "$id" --reason "superseded by a newer run"'],
    "redrive": ['runfox redrive "$id"  # workers run the steps that did not complete',
                'runfox redrive "$id" --executor tasks:execute  # run them here'],
    "history": ['runfox history "$id" --json'],
    "prune": ["runfox prune --older-than 30d --status complete,cancelled"],
    "graph": ["runfox graph etl.yaml --format svg --rankdir LR > etl.svg",
              'runfox graph etl.yaml --execution "$id"'],
    "schema": ["runfox schema > runfox.schema.json"],
    "db": ["runfox db upgrade --backend postgresql+psycopg://app@db/runfox"],
    "db upgrade": ["runfox db upgrade --backend sqlite:///runfox.db"],
    "scheduler": ["runfox scheduler --backend postgresql+psycopg://app@db/runfox"],
    "schedule": ["runfox schedule add nightly etl.yaml --cron '30 2 * * *' --tz Europe/Paris"],
    "schedule add": ["runfox schedule add nightly etl.yaml --cron '30 2 * * *' --tz Europe/Paris",
                     "runfox schedule add poll poll.yaml --every 5m --input region=eu "
                     "--overlap skip"],
    "schedule list": ["runfox schedule list --json"],
    "schedule show": ["runfox schedule show nightly"],
    "schedule pause": ["runfox schedule pause nightly"],
    "schedule resume": ["runfox schedule resume nightly"],
    "schedule remove": ["runfox schedule remove nightly"],
    "schedule next": ["runfox schedule next nightly -n 5",
                      "runfox schedule next --cron '0 9 * * mon-fri' --tz America/New_York"],
    "ui": ["runfox ui --backend sqlite:///runfox.db  # then open http://127.0.0.1:8765/"],
    "rerun": ["runfox rerun 2026 --executor tasks:execute --input k=5 --backend sqlite:///r.db"],
    "cache": ["runfox cache list --backend sqlite:///runfox.db"],
    "cache list": ["runfox cache list --fn fetch --json"],
    "cache show": ["runfox cache show 3f2a...e9 --backend sqlite:///runfox.db"],
    "cache clear": ["runfox cache clear --fn fetch --backend sqlite:///runfox.db"],
    "db current": ["runfox db current --backend postgresql+psycopg://app@db/runfox"],
}


def _command(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
             parents: list[argparse.ArgumentParser], summary: str) -> argparse.ArgumentParser:
    examples = "\n".join(f"  {line}" for line in _EXAMPLES[name])
    return sub.add_parser(name.split()[-1], parents=parents, help=summary, description=summary,
                          epilog=f"examples:\n{examples}",
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--backend", metavar="URL", default=None, help=_BACKEND_HELP)
    common.add_argument("--debug", action="store_true", default=False, help=_DEBUG_HELP)

    inputs = argparse.ArgumentParser(add_help=False)
    inputs.add_argument("--input", action="append", metavar="KEY=VALUE",
                        help="one workflow input; VALUE is parsed as JSON when it is valid "
                             "JSON, else kept as a string (repeatable)")
    inputs.add_argument("--inputs", metavar="JSON",
                        help="all inputs as a JSON object, or @FILE; --input overrides keys")
    inputs.add_argument("--help-inputs", action="store_true",
                        help="list the inputs SPEC declares (type, required or default, "
                             "description) and exit without running")

    parser = argparse.ArgumentParser(
        prog="runfox", description="Run and inspect runfox workflows.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""\
--backend and --debug also work before COMMAND; the command's own value wins.
`runfox COMMAND --help` shows a command's options and an example.

examples:
  runfox run hello.yaml --executor tasks:execute --input name=world
  runfox --backend sqlite:///runfox.db list

exit codes: 0 complete/ok, 1 failed or cancelled, 2 bad spec or usage (also: no
COMMAND), 3 halted, 4 backend unreachable or misconfigured, 5 timeout, 130 interrupted""")
    parser.add_argument("--version", action="version", version=f"runfox {__version__}",
                        help="print runfox's version and exit")
    # Before the command: other dests, so a command's defaults cannot overwrite them.
    parser.add_argument("--backend", metavar="URL", dest="global_backend", default=None,
                        help=_BACKEND_HELP)
    parser.add_argument("--debug", action="store_true", dest="global_debug", default=False,
                        help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(sub, "run", [common, inputs], "create an execution and drive it to its end")
    p.add_argument("spec", metavar="SPEC", help="workflow YAML file, or - for stdin")
    p.add_argument("--executor", metavar="MODULE:ATTR",
                   default=os.environ.get("RUNFOX_EXECUTOR") or None,
                   help="run jobs here with this executor; without it, jobs wait for "
                        "`runfox worker` processes")
    p.add_argument("--workers", type=int, default=4, metavar="N",
                   help="jobs run at once by the local executor (threads, default 4)")
    p.add_argument("--timeout", type=_positive_float, metavar="SECONDS",
                   help="give up waiting after this long (exit 5)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--target", action="append", metavar="STEP",
                   help="run only this step and what it needs; the other steps are skipped "
                        "(repeatable)")
    p.set_defaults(handler=commands.run)

    p = _command(sub, "start", [common, inputs],
                 "create an execution, dispatch its first jobs, print its id")
    p.add_argument("spec", metavar="SPEC", help="workflow YAML file, or - for stdin")
    p.add_argument("--key", metavar="KEY",
                   help="idempotency key: while an execution started with KEY exists, "
                        "print its id instead of starting another")
    p.add_argument("--queue", action="store_true",
                   help="only queue the start for a worker (Backend.submit): one row written "
                        "and the id printed at once; the execution appears when a worker "
                        "takes it (SQL backends; elsewhere a plain start)")
    p.set_defaults(handler=commands.start)

    p = _command(sub, "worker", [common], "claim and run jobs until SIGTERM/SIGINT")
    p.add_argument("--executor", metavar="MODULE:ATTR",
                   default=os.environ.get("RUNFOX_EXECUTOR") or None,
                   help="the (fn, inputs) -> dict callable (default: $RUNFOX_EXECUTOR)")
    p.add_argument("--concurrency", type=int, default=1, metavar="N",
                   help="jobs run at once (default 1)")
    p.add_argument("--processes", action="store_true",
                   help="run each job in a child process (CPU-bound work; a crashing or "
                        "timed-out job's process is replaced)")
    p.add_argument("--lease", type=_positive_float, default=DEFAULT_LEASE, metavar="SECONDS",
                   help="how long a claimed job is held between heartbeats (every third "
                        "of it) before another worker may take it; a step with a timeout "
                        f"holds min(lease, timeout + 5) (default {DEFAULT_LEASE:g})")
    p.add_argument("--poll-interval", type=_positive_float, default=1.0, metavar="SECONDS",
                   help="longest wait between claims while the queue stays empty: waits "
                        "start at 5 ms and double; a dispatch in this process (on "
                        "PostgreSQL, in any) ends a wait at once (default 1)")
    p.add_argument("--sweep-interval", type=_positive_float, default=5.0, metavar="SECONDS",
                   help="how often to advance running executions (retries, lost jobs; "
                        "default 5)")
    p.add_argument("--stale-after", type=_positive_float, metavar="SECONDS",
                   help="re-dispatch steps in progress this long with no job "
                        "(default: max(2 x lease, 30))")
    p.add_argument("--no-drive", action="store_true",
                   help="only run jobs; leave applying results to another process")
    p.add_argument("--idle-timeout", type=_positive_float, metavar="SECONDS",
                   help="exit after this long with no job, but not while a retry of a "
                        "running execution is waiting")
    p.add_argument("--max-jobs", type=int, metavar="N", help="exit after N jobs")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve Prometheus metrics on http://127.0.0.1:PORT/metrics "
                        "(needs prometheus-client: pip install 'runfox[metrics]')")
    p.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                   help="address the metrics server binds (default 127.0.0.1)")
    p.set_defaults(handler=commands.worker)

    p.add_argument("--schedule-interval", type=_positive_float, default=5.0,
                   metavar="SECONDS", help="the longest wait between looks for due schedules, "
                   "so how late a schedule added elsewhere may fire (default 5); known "
                   "schedules fire on time")
    p.add_argument("--no-schedules", action="store_true",
                   help="fire no schedules (leave them to other workers or `runfox scheduler`)")

    p = _command(sub, "scheduler", [common], "only fire due schedules, until SIGTERM/SIGINT")
    p.add_argument("--interval", type=_positive_float, default=1.0, metavar="SECONDS",
                   help="seconds between looks for due schedules (default 1)")
    p.add_argument("--idle-timeout", type=_positive_float, metavar="SECONDS",
                   help="exit after this long")
    p.set_defaults(handler=schedule_cli.scheduler)
    _schedule_commands(sub, common, inputs)

    p = _command(sub, "status", [common], "show one execution")
    p.add_argument("id", metavar="ID", help="the execution id as `runfox start` and `runfox "
                                            "list` print it, or a unique prefix of it or of "
                                            "its execution id (20261130T0915)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--step", metavar="STEP", help="show this step: the inputs it ran with "
                                                  "and its output")
    p.add_argument("--watch", action="store_true",
                   help="redraw until the execution ends (clears the screen on a terminal)")
    p.add_argument("--interval", type=_positive_float, default=1.0, metavar="SECONDS",
                   help="with --watch: seconds between redraws (default 1)")
    p.set_defaults(handler=commands.status)

    p = _command(sub, "workers", [common], "list the workers registered in the backend "
                 "(dead ones marked)")
    p.add_argument("--json", action="store_true", help="a JSON array on stdout")
    p.set_defaults(handler=commands.workers)

    p = _command(sub, "list", [common], "list executions, newest first")
    p.add_argument("--status", choices=[s.value for s in WorkflowStatus],
                   help="only executions in this status")
    p.add_argument("--limit", type=int, default=50, metavar="N",
                   help="at most N executions (default 50)")
    p.add_argument("--json", action="store_true", help="a JSON array on stdout")
    p.set_defaults(handler=commands.list_executions)

    p = _command(sub, "cancel", [common], "cancel a running execution")
    p.add_argument("id", metavar="ID", help="the execution id, or a unique prefix of it or "
                                            "of its execution id")
    p.add_argument("--reason", metavar="TEXT", help="recorded in the outcome")
    p.set_defaults(handler=commands.cancel)

    p = _command(sub, "redrive", [common], "continue a failed, cancelled or halted-on-error "
                 "execution from the steps that did not complete")
    p.add_argument("id", metavar="ID", help="the execution id, or a unique prefix of it or "
                                            "of its execution id")
    p.add_argument("--executor", metavar="MODULE:ATTR",
                   default=os.environ.get("RUNFOX_EXECUTOR") or None,
                   help="run the steps here and wait for the end; without it, the jobs "
                        "go to `runfox worker` processes")
    p.add_argument("--timeout", type=_positive_float, metavar="SECONDS",
                   help="with --executor: give up waiting after this long (exit 5)")
    p.set_defaults(handler=commands.redrive)

    p = _command(sub, "history", [common], "show an execution's history of events")
    p.add_argument("id", metavar="ID", help="the execution id, or a unique prefix of it or "
                                            "of its execution id")
    p.add_argument("--json", action="store_true", help="a JSON array of events on stdout")
    p.set_defaults(handler=history_cli.history)

    p = _command(sub, "prune", [common], "delete finished executions (with their steps, "
                 "jobs and history) older than an age")
    p.add_argument("--older-than", required=True, metavar="AGE",
                   help="last written longer ago than this: 30d, 12h, 90m, 45s, 2w")
    p.add_argument("--status", metavar="S,...", help="only these finished statuses "
                   "(default: complete,failed,halted,cancelled)")
    p.add_argument("--batch", type=int, default=500, metavar="N",
                   help="executions deleted per transaction (default 500)")
    p.set_defaults(handler=history_cli.prune)

    _cache_commands(sub, common)

    p = _command(sub, "graph", [common], "print the step graph (Mermaid or Graphviz DOT)")
    p.add_argument("spec", metavar="SPEC", help="workflow YAML file, or - for stdin")
    p.add_argument("--format", choices=("mermaid", "dot", "svg"), default="mermaid",
                   help="mermaid (default), dot (Graphviz source) or svg (runs Graphviz's "
                        "`dot`, which must be installed)")
    p.add_argument("--rankdir", choices=render.RANKDIRS, default="TB",
                   help="layout direction: TB (default), LR, BT or RL")
    p.add_argument("--execution", metavar="ID", help="colour the steps by this "
                                                     "execution's status (an id or a "
                                                     "unique prefix)")
    p.set_defaults(handler=commands.graph)

    p = _command(sub, "ui", [common], "serve a read-only web dashboard of executions, "
                 "workers and schedules (needs the ui extra)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                                                       "127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free)")
    p.add_argument("--refresh", type=_positive_float, default=2.0, metavar="SECONDS",
                   help="how often a page of a running execution refreshes (default 2)")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="also serve Prometheus metrics (queue depth, workers alive) on "
                        "http://127.0.0.1:PORT/metrics (pip install 'runfox[metrics]')")
    p.set_defaults(handler=ui_cli.ui)

    p = _command(sub, "schema", [], "print the JSON Schema of spec files (for editors)")
    p.set_defaults(handler=commands.schema, backend=None, debug=False)
    p = _command(sub, "db", [], "upgrade or show the schema of a SQL backend")
    db_sub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    _command(db_sub, "db upgrade", [common], "migrate the tables to this runfox's schema "
             "in place (creating them in an empty database)").set_defaults(handler=db.upgrade)
    _command(db_sub, "db current", [common], "show the schema version the database "
             "holds").set_defaults(handler=db.current)
    return parser


def _cache_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                    common: argparse.ArgumentParser) -> None:
    p = _command(sub, "rerun", [common], "run a new execution of an execution's spec and "
                 "inputs; with the step cache, unchanged steps are not run again")
    p.add_argument("id", metavar="ID", help="the execution id, or a unique prefix of it or "
                                            "of its execution id")
    p.add_argument("--input", action="append", metavar="KEY=VALUE",
                   help="override one input (VALUE parsed as JSON when it is; repeatable)")
    p.add_argument("--executor", metavar="MODULE:ATTR",
                   default=os.environ.get("RUNFOX_EXECUTOR") or None,
                   help="run it here and wait for the end; without it, the jobs go to "
                        "`runfox worker` processes")
    p.add_argument("--timeout", type=_positive_float, metavar="SECONDS",
                   help="with --executor: give up waiting after this long (exit 5)")
    p.set_defaults(handler=cache_cli.rerun)
    p = _command(sub, "cache", [], "list, show or clear step cache entries")
    actions = p.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    p = _command(actions, "cache list", [common], "list entries, newest first")
    p.add_argument("--fn", metavar="FN", help="only this fn's entries")
    p.add_argument("--json", action="store_true", help="a JSON array (no outputs)")
    p.set_defaults(handler=cache_cli.cache_list)
    p = _command(actions, "cache show", [common], "one entry, its output included")
    p.add_argument("key", metavar="KEY")
    p.set_defaults(handler=cache_cli.cache_show)
    p = _command(actions, "cache clear", [common], "delete every entry, or one fn's")
    p.add_argument("--fn", metavar="FN", help="only this fn's entries")
    p.set_defaults(handler=cache_cli.cache_clear)


def _schedule_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                       common: argparse.ArgumentParser, inputs: argparse.ArgumentParser
                       ) -> None:
    p = _command(sub, "schedule", [], "add, inspect and control durable schedules")
    actions = p.add_subparsers(dest="schedule_command", required=True, metavar="ACTION")
    p = _command(actions, "schedule add", [common, inputs], "store a new schedule of SPEC")
    p.add_argument("name", metavar="NAME", help="the schedule's name (unique per backend)")
    p.add_argument("spec", metavar="SPEC", help="workflow YAML file (stored as it is now)")
    trigger = p.add_mutually_exclusive_group(required=True)
    trigger.add_argument("--cron", metavar="EXPR", help="five cron fields or @hourly/@daily/...")
    trigger.add_argument("--every", metavar="DUR", help="a period: seconds or 30s/5m/1h/1d")
    trigger.add_argument("--at", metavar="TIME", help="one ISO 8601 time (once)")
    p.add_argument("--tz", metavar="ZONE", default="UTC",
                   help="IANA time zone of --cron and a naive --at (default UTC)")
    p.add_argument("--catch-up", choices=("none", "one", "all"), default="one",
                   help="fires missed while no worker ran: skip them, fire once, or fire "
                        "each (at most 100) (default one)")
    p.add_argument("--overlap", choices=("allow", "skip", "cancel_previous"), default="allow",
                   help="when the previous execution still runs (default allow)")
    p.set_defaults(handler=schedule_cli.add)
    p = _command(actions, "schedule list", [common], "list schedules, errors included")
    p.add_argument("--json", action="store_true", help="a JSON array on stdout")
    p.set_defaults(handler=schedule_cli.list_schedules)
    for action, summary, handler in (
            ("show", "show one schedule as JSON", schedule_cli.show),
            ("pause", "stop firing a schedule", schedule_cli.pause),
            ("resume", "fire a paused schedule again (missed fires are not caught up)",
             schedule_cli.resume),
            ("remove", "delete a schedule (its executions stay)", schedule_cli.remove)):
        p = _command(actions, f"schedule {action}", [common], summary)
        p.add_argument("name", metavar="NAME")
        p.set_defaults(handler=handler)
    p = _command(actions, "schedule next", [common],
                 "print the next fire times of a schedule or of an expression")
    p.add_argument("name", metavar="NAME", nargs="?")
    p.add_argument("-n", type=int, default=5, metavar="N", help="how many (default 5)")
    p.add_argument("--cron", metavar="EXPR", help="an expression instead of a stored schedule")
    p.add_argument("--every", metavar="DUR", help="a period instead of a stored schedule")
    p.add_argument("--tz", metavar="ZONE", default="UTC", help="time zone of --cron")
    p.set_defaults(handler=schedule_cli.next_times)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _error_lines(exc: BaseException) -> tuple[str, list[str]]:
    """What ``main`` prints for ``exc``: a one-line subject and, for an error made
    of several problems (``SpecError``) or candidates (``UsageError.details``),
    one line per item, printed indented under ``<subject>:``."""
    if isinstance(exc, SpecError):
        head = str(exc).splitlines()[0] if str(exc) else "invalid workflow spec"
        head = head.rpartition(" (")[0] or head.rstrip(":")  # drop "(N problem(s)):"
        return _one_line(head), [_one_line(str(p)) for p in exc.problems]
    details = [_one_line(d) for d in getattr(exc, "details", ()) if isinstance(d, str)]
    return _one_line(str(exc).strip() or type(exc).__name__), details


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``runfox`` command line; returns the exit code (see ``runfox.cli.exits``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:  # no command: the help, as a usage error
        build_parser().print_help(sys.stderr)
        return EXIT_USAGE
    args = build_parser().parse_args(argv)
    args.debug = args.debug or args.global_debug
    args.backend = args.backend or args.global_backend or default_backend_url()
    args.backend_shown = mask_url(args.backend)
    serving = args.command in ("worker", "scheduler")
    level = logging.DEBUG if args.debug else (logging.INFO if serving else logging.WARNING)
    # A serving command logs a line per job: written in batches, and each record
    # made without what the format does not show (see cli.logs).
    handler = BatchedHandler(sys.stderr) if serving else logging.StreamHandler(sys.stderr)
    if serving:
        lean_records()
    logging.basicConfig(level=level, handlers=[handler],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("runfox: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        if isinstance(exc, UsageError | SpecError | WorkflowNotFound | UnknownStepError
                      | ValueError):
            code = EXIT_USAGE
        elif isinstance(exc, BackendError):
            code = EXIT_BACKEND
        else:
            code = EXIT_FAILED
        prefix = "" if code != EXIT_FAILED else f"{type(exc).__name__}: "
        hint = "" if args.debug or code != EXIT_FAILED else " (--debug shows the traceback)"
        subject, items = _error_lines(exc)
        if items:
            print(f"runfox: error: {prefix}{subject}:{hint}", file=sys.stderr)
            print("\n".join(f"  {item}" for item in items), file=sys.stderr)
        else:
            print(f"runfox: error: {prefix}{subject}{hint}", file=sys.stderr)
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
