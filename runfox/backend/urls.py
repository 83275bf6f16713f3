"""Choosing a store and runner from a URL, as ``runfox --backend URL`` does.

- ``sqlite:///path/to.db``, ``postgresql+psycopg://...``, ``mysql+pymysql://...``:
  the SQL store and runner (``runfox.backend.sql``), one database for both.
- ``aws://...``: DynamoDB store and SQS runner (``runfox.backend.aws``).
- ``memory://``: in-memory store and in-process runner (one process only).
- any scheme an installed package declares in the entry point group
  ``runfox.backends`` (see ``runfox.backend.registry``).

``$RUNFOX_BACKEND`` supplies the URL when none is given; the default is
``sqlite:///runfox.db`` in the current directory.
"""

from __future__ import annotations

import os
from typing import Any

from ..urlmask import mask_url, url_secrets
from .base import Backend
from .registry import factory_for
from .runner import Runner
from .store import Store

__all__ = ["DEFAULT_URL", "backend_from_url", "default_backend_url", "mask_url",
           "parts_from_url", "url_secrets"]

DEFAULT_URL = "sqlite:///runfox.db"


def default_backend_url() -> str:
    return os.environ.get("RUNFOX_BACKEND") or DEFAULT_URL


def parts_from_url(url: str, **options: Any) -> tuple[Store, Runner]:
    """A (store, runner) pair for ``url``, from the factory registered for its scheme.

    ``options`` go to the factory (the SQL factory takes ``lease``, ``cache_size``
    and more; see each backend). Schemes come from ``runfox.backend.registry``.

    Raises:
        ValueError: the URL has no scheme, no package provides it (the message
            lists the known schemes), or the factory rejects the URL or an option.
        BackendError: the factory cannot be loaded, or cannot reach its backend.
    """
    scheme, sep, _ = url.partition(":")
    if not sep or not scheme:
        raise ValueError(f"backend URL {mask_url(url)!r} has no scheme: expected "
                         "sqlite:///FILE, postgresql+psycopg://..., mysql+pymysql://..., "
                         "aws://..., memory:// or a scheme a plug-in registers")
    parts = factory_for(scheme)(url, **options)
    if (not isinstance(parts, tuple) or len(parts) != 2 or not isinstance(parts[0], Store)
            or not isinstance(parts[1], Runner)):
        raise TypeError(f"the factory for {scheme!r} URLs returned {type(parts).__name__}, "
                        "not a (Store, Runner) pair")
    return parts


def backend_from_url(url: str | None = None, *, executor: Any = None, **options: Any
                     ) -> Backend:
    """A Backend whose store and runner both come from ``url`` (default: see above)."""
    store, runner = parts_from_url(url or default_backend_url(), **options)
    return Backend(executor=executor, store=store, runner=runner)
