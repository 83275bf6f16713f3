"""The SQL store and runner: SQLite, PostgreSQL and MySQL/MariaDB on SQLAlchemy Core.

    from runfox.backend.sql import SqlStore, SqlRunner, parts_from_url

    store, runner = parts_from_url("postgresql+psycopg://runfox@db/runfox")
    backend = Backend(store=store, runner=runner)

    # the seed's names: a file path, and both may share one file
    backend = Backend(store=SqliteStore("workflow.db"), runner=SqliteRunner("workflow.db"))

Needs ``pip install 'runfox[sql]'`` (SQLite), ``'runfox[postgres]'`` or
``'runfox[mysql]'``; without SQLAlchemy the classes still import and fail when
constructed, with that hint. Modules: ``schema`` (tables and versions),
``dialects`` (what differs per database), ``database`` (engine, transactions,
error translation), ``store``, ``runner``.
"""

from __future__ import annotations

import os
from typing import Any

from ...errors import BackendError

__all__ = ["SqlRunner", "SqlStore", "SqliteRunner", "SqliteStore", "parts_from_url"]

_RUNNER_OPTIONS = ("lease", "max_deliveries")
_STORE_OPTIONS = ("cache_size", "offload")

try:
    from .database import Database
    from .runner import SqlRunner
    from .store import SqlStore
except ModuleNotFoundError as exc:  # SQLAlchemy is an optional dependency
    if exc.name != "sqlalchemy" and not (exc.name or "").startswith("sqlalchemy."):
        raise
    _HINT = f"the SQL backend needs SQLAlchemy ({exc}): pip install 'runfox[sql]'"

    class SqlStore:  # type: ignore[no-redef]
        """Placeholder: SQLAlchemy is not installed."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise BackendError(_HINT)

    class SqlRunner:  # type: ignore[no-redef]
        """Placeholder: SQLAlchemy is not installed."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise BackendError(_HINT)

    def parts_from_url(url: str, **options: Any) -> tuple[SqlStore, SqlRunner]:
        raise BackendError(_HINT)

else:

    def parts_from_url(url: str, **options: Any) -> tuple[SqlStore, SqlRunner]:
        """A store and a runner on one database (one engine, one connection pool).

        ``options`` may hold the runner's ``lease`` and ``max_deliveries``, the
        store's ``cache_size`` and ``offload`` (also read from the URL's
        ``?offload=`` parameter, which is removed before the URL reaches the
        driver), and ``create_tables``, ``busy_timeout``,
        ``sqlite_synchronous`` and ``engine_options`` (see ``SqlStore``).

        Raises:
            ValueError: an unknown option or a malformed URL.
            BackendError: the driver is missing or the database is unreachable.
        """
        runner_options = {k: options.pop(k) for k in _RUNNER_OPTIONS if k in options}
        store_options = {k: options.pop(k) for k in _STORE_OPTIONS if k in options}
        url, offload = _take_offload(url)
        if offload is not None:
            store_options.setdefault("offload", offload)
        try:
            db = Database.open(url, **options)
        except TypeError as exc:
            raise ValueError(f"unknown option for a SQL backend: {exc}") from exc
        try:
            runner = SqlRunner(_database=db, **runner_options)
            store = SqlStore(_database=db.acquire(), **store_options)
        except BaseException:
            db.release()
            raise
        runner.payloads = store.payloads()  # one offloader: results and records share blobs
        return store, runner


def _take_offload(url: str) -> tuple[str, str | None]:
    """``url`` without its ``offload`` query parameter, and that parameter's value."""
    from urllib.parse import parse_qsl, urlencode

    base, _, query_text = url.partition("?")  # not urlsplit: it drops sqlite:////'s slash
    query = parse_qsl(query_text, keep_blank_values=True)
    found = [v for k, v in query if k == "offload"]
    if not found:
        return url, None
    if len(found) > 1:
        raise ValueError("the backend URL gives offload= more than once")
    rest = urlencode([(k, v) for k, v in query if k != "offload"])
    return (f"{base}?{rest}" if rest else base), found[0]


def _sqlite_url(path: str | os.PathLike[str]) -> str:
    text = os.fspath(path)
    if text.startswith("sqlite:"):
        return text
    if not text or text == ":memory:":
        raise ValueError("SqliteStore/SqliteRunner need a file path, e.g. 'workflow.db'")
    return "sqlite:///" + os.path.abspath(text)


class SqliteStore(SqlStore):
    """The seed's name: ``SqlStore`` on a SQLite file (``SqliteStore("workflow.db")``).

    ``path`` is a file path (created if missing) or a ``sqlite:///`` URL; other
    keywords are ``SqlStore``'s.
    """

    def __init__(self, path: str | os.PathLike[str] = "workflow.db", **options: Any) -> None:
        super().__init__(_sqlite_url(path), **options)


class SqliteRunner(SqlRunner):
    """The seed's name: ``SqlRunner`` on a SQLite file; may share the store's file."""

    def __init__(self, path: str | os.PathLike[str] = "workflow.db", **options: Any) -> None:
        super().__init__(_sqlite_url(path), **options)
