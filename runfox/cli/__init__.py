"""``runfox``: the command line.

    runfox run SPEC [--executor MODULE:ATTR] [--input KEY=VALUE ...] [--inputs JSON]
                    [--backend URL] [--workers N] [--timeout S] [--quiet]
    runfox start SPEC [--input KEY=VALUE ...] [--inputs JSON] [--backend URL]
    runfox worker --backend URL --executor MODULE:ATTR [--concurrency N] [--processes]
                  [--lease SECONDS] ...
    runfox status ID [--backend URL] [--json]
    runfox list [--status S] [--limit N] [--json] [--backend URL]
    runfox cancel ID [--reason TEXT] [--backend URL]
    runfox graph SPEC [--format mermaid|dot] [--execution ID] [--backend URL]

``--backend`` defaults to ``$RUNFOX_BACKEND``, else ``sqlite:///runfox.db`` in the
current directory; ``--executor`` defaults to ``$RUNFOX_EXECUTOR``. The current
directory is importable, so ``--executor tasks:execute`` finds ``./tasks.py``.
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

from ..backend.urls import default_backend_url, mask_url
from ..errors import BackendError, SpecError, UnknownStepError, WorkflowNotFound
from ..status import WorkflowStatus
from ..worker import DEFAULT_LEASE
from . import commands
from .exits import EXIT_BACKEND, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, UsageError

__all__ = ["build_parser", "main"]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--backend", metavar="URL", default=None,
                        help="sqlite:///FILE, postgresql+psycopg://..., mysql+pymysql://..., "
                             "aws://... or memory:// (default: $RUNFOX_BACKEND, else "
                             "sqlite:///runfox.db)")
    common.add_argument("--debug", action="store_true",
                        help="debug logging, and a traceback on error")

    inputs = argparse.ArgumentParser(add_help=False)
    inputs.add_argument("--input", action="append", metavar="KEY=VALUE",
                        help="one workflow input; VALUE is parsed as JSON when it is valid "
                             "JSON, else kept as a string (repeatable)")
    inputs.add_argument("--inputs", metavar="JSON",
                        help="all inputs as a JSON object, or @FILE; --input overrides keys")

    parser = argparse.ArgumentParser(
        prog="runfox", description="Run and inspect runfox workflows.",
        epilog="exit codes: 0 complete/ok, 1 failed or cancelled, 2 bad spec or usage, "
               "3 halted, 4 backend unreachable or misconfigured, 5 timeout, "
               "130 interrupted")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", parents=[common, inputs],
                       help="create an execution and drive it to its end")
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
    p.set_defaults(handler=commands.run)

    p = sub.add_parser("start", parents=[common, inputs],
                       help="create an execution, dispatch its first jobs, print its id")
    p.add_argument("spec", metavar="SPEC", help="workflow YAML file, or - for stdin")
    p.set_defaults(handler=commands.start)

    p = sub.add_parser("worker", parents=[common],
                       help="claim and run jobs until SIGTERM/SIGINT")
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
    p.add_argument("--poll-interval", type=_positive_float, default=0.2, metavar="SECONDS",
                   help="wait between claims when the queue is empty (default 0.2)")
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
    p.set_defaults(handler=commands.worker)

    p = sub.add_parser("status", parents=[common], help="show one execution")
    p.add_argument("id", metavar="ID", help="the execution id (workflow_execution_id)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(handler=commands.status)

    p = sub.add_parser("list", parents=[common], help="list executions, newest first")
    p.add_argument("--status", choices=[s.value for s in WorkflowStatus])
    p.add_argument("--limit", type=int, default=50, metavar="N", help="default 50")
    p.add_argument("--json", action="store_true", help="a JSON array on stdout")
    p.set_defaults(handler=commands.list_executions)

    p = sub.add_parser("cancel", parents=[common], help="cancel a running execution")
    p.add_argument("id", metavar="ID")
    p.add_argument("--reason", metavar="TEXT", help="recorded in the outcome")
    p.set_defaults(handler=commands.cancel)

    p = sub.add_parser("graph", parents=[common],
                       help="print the step graph (Mermaid or Graphviz DOT)")
    p.add_argument("spec", metavar="SPEC", help="workflow YAML file, or - for stdin")
    p.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")
    p.add_argument("--execution", metavar="ID", help="colour the steps by this "
                                                     "execution's status")
    p.set_defaults(handler=commands.graph)
    return parser


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, SpecError):
        where = f" {exc.source}" if exc.source else ""
        return f"invalid workflow spec{where}: " + "; ".join(str(p) for p in exc.problems)
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``runfox`` command line; returns the exit code (see ``runfox.cli.exits``)."""
    args = build_parser().parse_args(argv)
    args.backend = args.backend or default_backend_url()
    args.backend_shown = mask_url(args.backend)
    level = logging.DEBUG if args.debug else (
        logging.INFO if args.command == "worker" else logging.WARNING)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # so --executor finds modules next to the spec
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
        print(f"runfox: error: {prefix}{_one_line(exc)}{hint}", file=sys.stderr)
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
