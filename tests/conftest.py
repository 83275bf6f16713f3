"""Shared test configuration.

Tests that need a server (PostgreSQL, MariaDB, a moto server) call
``need_service``: on a laptop without the server they skip with a loud reason;
with ``RUNFOX_REQUIRE_SERVICES=1`` (set by ``.ci/run``) they fail instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
