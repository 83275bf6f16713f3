"""The dashboard's Flask application: JSON endpoints and the static page.

Read-only: every route answers GET (and HEAD) only; nothing here changes a record,
a schedule or a job. ``create_app(backend)`` builds the app over an open
``Backend``; ``runfox ui`` (``runfox.cli.ui``) serves it.

Endpoints (JSON):

- ``/api/executions?status=&workflow=&since=&limit=``: newest first, with counts
  by status (``data.filter_summaries``). At most ``SCAN_LIMIT`` executions are
  read per request; ``truncated`` says when there were more.
- ``/api/executions/<id>``: one execution (``data.execution_detail``); ``<id>`` is
  the key or a unique prefix of it or of its execution id. A stored record that
  cannot be decoded answers ``{"corrupt": {"key", "reason"}}`` (status 200: the
  page shows it); an unknown id 404, an ambiguous prefix 400 with candidates.
- ``/api/executions/<id>/history``: the events (``Store.history``), or ``[]`` with
  a ``note`` where the store keeps none.
- ``/api/workers``, ``/api/schedules``: ``[]`` with a ``note`` where the backend
  has none.
"""

from __future__ import annotations

import time
from importlib import resources
from typing import Any

from flask import Flask, Response, jsonify, request

from ..backend import Backend
from ..errors import BackendError, CorruptRecord, WorkflowNotFound
from ..schedules import Schedules
from ..status import WorkflowStatus
from . import data

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "SCAN_LIMIT", "create_app"]

#: Executions listed when ``limit`` is not given, and the most a request may ask for.
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
#: Summaries read per list request (filters apply to these, newest first).
SCAN_LIMIT = 10_000
#: Candidates named by an ambiguous prefix.
CANDIDATES = 5

# Nothing but our own files: no inline script, no inline style, no other origin.
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

_STATIC = {"app.js": "text/javascript", "style.css": "text/css", "index.html": "text/html",
           "favicon.svg": "image/svg+xml"}


class ApiError(Exception):
    """An error answered as ``{"error": message, ...}`` with an HTTP status."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


def _static(name: str) -> bytes:
    return resources.files("runfox.ui").joinpath("static", name).read_bytes()


def resolve(backend: Backend, text: str) -> str:
    """The execution key ``text`` names (the rule of ``runfox status``)."""
    found = backend.store.find(text, limit=CANDIDATES + 1)
    if found and found[0] == text:
        return text
    if len(found) == 1:
        return found[0]
    if not found:
        raise ApiError(404, f"no execution matches {text!r}")
    raise ApiError(400, f"{text!r} matches several executions; give more of it",
                   candidates=found[:CANDIDATES], more=len(found) > CANDIDATES)


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    text = request.args.get(name, "")
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"{name}: {text!r} is not an integer") from None
    if not low <= value <= high:
        raise ApiError(400, f"{name}: must be between {low} and {high}, got {value}")
    return value


def list_executions(backend: Backend) -> dict[str, Any]:
    status_text = request.args.get("status") or None
    status = None
    if status_text is not None:
        try:
            status = WorkflowStatus(status_text)
        except ValueError:
            raise ApiError(400, f"status: {status_text!r} is not one of "
                           + ", ".join(s.value for s in WorkflowStatus)) from None
    since = None
    if request.args.get("since"):
        try:
            since = data.parse_since(request.args["since"])
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
    limit = _int_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    summaries = backend.store.list_executions(limit=SCAN_LIMIT)
    page = data.filter_summaries(summaries, status=status,
                                 workflow=request.args.get("workflow") or None,
                                 since=since, limit=limit)
    page["truncated"] = len(summaries) >= SCAN_LIMIT
    return page


def one_execution(backend: Backend, ident: str) -> dict[str, Any]:
    key = resolve(backend, ident)
    try:
        record = backend.store.load_shared(key)
    except CorruptRecord as exc:
        return {"id": key, "corrupt": {"key": exc.key, "reason": exc.reason}}
    except WorkflowNotFound:  # removed between find and load
        raise ApiError(404, f"no execution {key!r}") from None
    return data.execution_detail(record)


def history(backend: Backend, ident: str) -> dict[str, Any]:
    key = resolve(backend, ident)
    read = getattr(backend.store, "history", None)
    if read is None:
        return {"id": key, "events": [], "note": "this runfox keeps no execution history"}
    try:
        events = read(key)
    except CorruptRecord as exc:
        return {"id": key, "events": [], "corrupt": {"key": exc.key, "reason": exc.reason}}
    except WorkflowNotFound:
        raise ApiError(404, f"no execution {key!r}") from None
    except BackendError as exc:  # a store that keeps no history says so
        return {"id": key, "events": [], "note": str(exc)}
    return {"id": key, "events": data.plain_list(events)}


def workers(backend: Backend) -> dict[str, Any]:
    """Registered workers (``Store.workers()``), each marked alive or dead."""
    try:
        registry = backend.store.workers()
        rows = registry.list()
    except (BackendError, AttributeError, NotImplementedError) as exc:
        return {"workers": [], "note": f"this backend keeps no worker registry ({exc})"}
    now = time.time()
    return {"workers": [{**row.to_dict(), "jobs": len(row.jobs),
                         "alive": "dead" if row.dead(now) else "alive",
                         "silent_for": round(row.silent_for(now), 1)} for row in rows]}


def schedules(backend: Backend) -> dict[str, Any]:
    try:
        stored = Schedules(backend).list()
    except BackendError as exc:
        return {"schedules": [], "note": str(exc)}
    return {"schedules": [data.schedule_json(s) for s in stored]}


def create_app(backend: Backend, *, refresh_seconds: float = 2.0) -> Flask:
    """The dashboard over ``backend`` (kept open; the caller closes it).

    ``refresh_seconds``: how often a page showing a running execution polls.
    """
    app = Flask("runfox.ui", static_folder=None)
    app.config["JSON_SORT_KEYS"] = False
    app.json.sort_keys = False  # type: ignore[attr-defined]

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> tuple[Response, int]:
        return jsonify({"error": str(exc), **exc.extra}), exc.status

    @app.errorhandler(BackendError)
    def backend_error(exc: BackendError) -> tuple[Response, int]:
        return jsonify({"error": f"{type(exc).__name__}: {exc}"}), 503

    @app.errorhandler(404)
    def not_found(exc: Exception) -> tuple[Response, int]:
        return jsonify({"error": f"no such page: {request.path}"}), 404

    @app.errorhandler(405)
    def not_allowed(exc: Exception) -> tuple[Response, int]:
        return jsonify({"error": f"{request.method} is not allowed: the dashboard is "
                                 "read-only"}), 405

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/")
    def index() -> Response:
        return Response(_static("index.html"), mimetype="text/html")

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(_static("favicon.svg"), mimetype="image/svg+xml")

    @app.get("/static/<name>")
    def static_file(name: str) -> Response:
        if name not in _STATIC:
            raise ApiError(404, f"no static file {name!r}")
        return Response(_static(name), mimetype=_STATIC[name])

    @app.get("/api/config")
    def config() -> Response:
        return jsonify({"refresh_seconds": refresh_seconds, "colours": data.STEP_COLOURS,
                        "step_statuses": list(data.STEP_COLOURS),
                        "workflow_statuses": [s.value for s in WorkflowStatus]})

    @app.get("/api/executions")
    def executions() -> Response:
        return jsonify(list_executions(backend))

    @app.get("/api/executions/<path:ident>/history")
    def execution_history(ident: str) -> Response:
        return jsonify(history(backend, ident))

    @app.get("/api/executions/<path:ident>")
    def execution(ident: str) -> Response:
        return jsonify(one_execution(backend, ident))

    @app.get("/api/workers")
    def worker_list() -> Response:
        return jsonify(workers(backend))

    @app.get("/api/schedules")
    def schedule_list() -> Response:
        return jsonify(schedules(backend))

    return app
