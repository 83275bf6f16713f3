"""Choosing a store and runner from a URL, as ``runfox --backend URL`` does.

- ``sqlite:///path/to.db``, ``postgresql+psycopg://...``, ``mysql+pymysql://...``:
  the SQL store and runner (``runfox.backend.sql``), one database for both.
- ``aws://...``: DynamoDB store and SQS runner (``runfox.backend.aws``).
- ``memory://``: in-memory store and in-process runner (one process only).

``$RUNFOX_BACKEND`` supplies the URL when none is given; the default is
``sqlite:///runfox.db`` in the current directory.
"""

from __future__ import annotations

import importlib
import os
import re
from typing import Any

from .base import Backend
from .runner import InProcessRunner, Runner
from .store import InMemoryStore, Store

__all__ = ["DEFAULT_URL", "backend_from_url", "default_backend_url", "mask_url",
           "parts_from_url"]

DEFAULT_URL = "sqlite:///runfox.db"

_SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb")


def default_backend_url() -> str:
    return os.environ.get("RUNFOX_BACKEND") or DEFAULT_URL


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***``, safe to print."""
    return re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", url)


def parts_from_url(url: str, **options: Any) -> tuple[Store, Runner]:
    """A (store, runner) pair for ``url``; ``ValueError`` for a scheme runfox lacks."""
    scheme = url.split(":", 1)[0].lower()
    base = scheme.split("+", 1)[0]
    if base in _SQL_SCHEMES:
        module = importlib.import_module(".sql", __package__)
    elif base == "aws":
        module = importlib.import_module(".aws", __package__)
    elif base == "memory":
        return InMemoryStore(), InProcessRunner()
    else:
        raise ValueError(f"unknown backend URL {mask_url(url)!r}: expected sqlite:///FILE, "
                         "postgresql+psycopg://..., mysql+pymysql://..., aws://... or memory://")
    return module.parts_from_url(url, **options)


def backend_from_url(url: str | None = None, *, executor: Any = None, **options: Any
                     ) -> Backend:
    """A Backend whose store and runner both come from ``url`` (default: see above)."""
    store, runner = parts_from_url(url or default_backend_url(), **options)
    return Backend(executor=executor, store=store, runner=runner)
