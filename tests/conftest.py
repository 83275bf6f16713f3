"""Shared test configuration.

Tests that need a server (PostgreSQL, MariaDB, a moto server) call
``need_service``: on a laptop without the server they skip with a loud reason;
with ``RUNFOX_REQUIRE_SERVICES=1`` (set by ``.ci/run``) they fail instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))


def services_required() -> bool:
    return os.environ.get("RUNFOX_REQUIRE_SERVICES", "") not in ("", "0", "false", "no")


def need_service(name: str, reason: str) -> None:
    """Skip (or, in CI, fail) a test whose server is not reachable."""
    message = f"SERVICE UNAVAILABLE: {name}: {reason}"
    if services_required():
        pytest.fail(message + " (RUNFOX_REQUIRE_SERVICES is set)", pytrace=False)
    pytest.skip(message)


#: The SQL databases the SQL tests run on (``sqldb.scratch_database`` makes them).
KINDS = ("sqlite", "postgresql", "mysql")


@pytest.fixture(params=KINDS)
def sql_parts(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """A fresh ``SqlStore`` and ``SqlRunner`` on each SQL database (``sqldb``)."""
    from sqldb import scratch_database

    from runfox.backend.sql import parts_from_url

    with scratch_database(request.param, tmp_path) as url:
        store, runner = parts_from_url(url)
        try:
            yield store, runner
        finally:
            runner.close()
            store.close()
