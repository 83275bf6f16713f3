"""``runfox db``: the SQL schema of a backend: ``upgrade`` it in place, show it (``current``).

    runfox db upgrade [--backend URL]   # from/to on stdout; exit 4 if it cannot
    runfox db current [--backend URL]   # the schema the database holds

Only SQL backends (SQLite, PostgreSQL, MySQL/MariaDB) have a schema; another
scheme is a usage error. Errors are raised for ``runfox.cli.main`` to print.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..errors import BackendError
from .exits import EXIT_COMPLETE, UsageError

if TYPE_CHECKING:
    from ..backend.sql.database import Database

__all__ = ["current", "upgrade"]

_SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb")


@contextmanager
def _database(args: argparse.Namespace) -> Iterator[Database]:
    """The backend's ``Database``, its schema not checked (that is this command's job)."""
    scheme = args.backend.partition("://")[0].partition("+")[0].lower()
    if scheme not in _SQL_SCHEMES:
        raise UsageError(f"runfox db works on SQL backends (sqlite, postgresql, mysql); "
                         f"{args.backend_shown} has no schema to manage")
    try:
        from ..backend.sql.database import Database
    except ModuleNotFoundError as exc:
        raise BackendError(f"runfox db needs SQLAlchemy and Alembic ({exc}): "
                           "pip install 'runfox[sql]'") from exc
    db = Database.open(args.backend, check_schema=False)
    try:
        yield db
    finally:
        db.release()


def upgrade(args: argparse.Namespace) -> int:
    """``runfox db upgrade``: migrate the tables in place (creating them if absent)."""
    with _database(args) as db:
        before, after = db.upgrade_schema()
    if before == after:
        print(f"runfox database {args.backend_shown}: already at {after.describe()}")
    else:
        print(f"runfox database {args.backend_shown}: upgraded from {before.describe()} "
              f"to {after.describe()}")
    return EXIT_COMPLETE


def current(args: argparse.Namespace) -> int:
    """``runfox db current``: the schema the database holds, and what to do about it."""
    from ..backend.sql.schema import HEAD_REVISION, SCHEMA_VERSION

    with _database(args) as db:
        state = db.schema_state()
    if state.at_head:
        verdict = "current"
    elif state.empty:
        verdict = "runfox creates the tables on first use, or run `runfox db upgrade`"
    elif state.newer:
        verdict = f"newer than this runfox (schema {SCHEMA_VERSION}): install a newer runfox"
    else:
        verdict = (f"this runfox needs schema {SCHEMA_VERSION} (revision {HEAD_REVISION}): "
                   f"run `runfox db upgrade --backend {args.backend_shown}`")
    print(f"runfox database {args.backend_shown}: {state.describe()}: {verdict}")
    return EXIT_COMPLETE
