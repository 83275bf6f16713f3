"""``runfox ui``: serve the read-only dashboard (``runfox.ui``) until interrupted.

Flask is imported here, when the command runs, so that the rest of the command
line works without the ``ui`` extra.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

from .exits import EXIT_COMPLETE, UsageError

__all__ = ["ui"]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ui(args: argparse.Namespace) -> int:
    """Serve the dashboard on ``--host``:``--port`` until SIGINT/SIGTERM."""
    try:
        from werkzeug.serving import make_server

        from ..ui import create_app
    except ImportError as exc:
        raise UsageError(f"runfox ui needs Flask ({exc.name} is not installed): "
                         "pip install 'runfox[ui]'") from None
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {args.port}")
    from .commands import close_backend, open_backend

    backend = open_backend(args.backend)
    metrics = None
    try:
        if getattr(args, "metrics_port", None) is not None:
            from .commands import start_metrics

            metrics = start_metrics(backend, args.metrics_port)
        app = create_app(backend, refresh_seconds=args.refresh)
        try:
            server = make_server(args.host, args.port, app, threaded=True)
        except OSError as exc:
            raise UsageError(f"cannot listen on {args.host}:{args.port}: "
                             f"{exc.strerror or exc}") from None
        host = f"[{args.host}]" if ":" in args.host else args.host
        print(f"runfox ui: serving {args.backend_shown} on http://{host}:{server.server_port}/ "
              "(read-only; Ctrl-C stops)", file=sys.stderr, flush=True)
        if not _loopback(args.host):
            print(f"runfox ui: warning: {args.host} is not a loopback address and the "
                  "dashboard has no authentication: anyone who reaches this port can read "
                  "every execution's inputs and outputs", file=sys.stderr, flush=True)
        try:
            server.serve_forever()
        finally:
            server.server_close()
    finally:
        if metrics is not None:
            metrics.close()
        close_backend(backend)
    return EXIT_COMPLETE
