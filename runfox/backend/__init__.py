"""Backends: the Backend itself, the Store and Runner contracts and their implementations.

``InMemoryStore``, ``InProcessRunner`` and ``InProcessWorker`` need nothing beyond
runfox. The SQL store and runner (``SqlStore``/``SqlRunner``, and the seed's
``SqliteStore``/``SqliteRunner``) need ``pip install 'runfox[sql]'``; the AWS ones
(``DynamoDBStore``/``SQSRunner``) need ``pip install 'runfox[aws]'``. Those are
imported on first use, so importing this package never requires a driver.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..inprocess import InProcessWorker  # the seed's name here; it lives in the workers layer
from .base import SUBMITTED_FN, SUBMITTED_STEP, Backend
from .cache_store import Cache, InMemoryCache
from .payload_store import InMemoryPayloads, Offloader, PayloadStore
from .runner import InProcessRunner, Runner
from .store import ExecutionSummary, InMemoryStore, Store

__all__ = [
    "SUBMITTED_FN",
    "SUBMITTED_STEP",
    "Backend",
    "Cache",
    "ExecutionSummary",
    "InMemoryCache",
    "InMemoryPayloads",
    "InMemoryStore",
    "InProcessRunner",
    "InProcessWorker",
    "Offloader",
    "PayloadStore",
    "Runner",
    "Store",
]

# name -> module that defines it; loaded lazily because each needs an optional driver.
_OPTIONAL = {
    "SqlStore": ".sql",
    "SqlRunner": ".sql",
    "SqliteStore": ".sql",
    "SqliteRunner": ".sql",
    "DynamoDBStore": ".aws",
    "SQSRunner": ".aws",
}


def __getattr__(name: str) -> Any:
    module = _OPTIONAL.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
