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
import re
from typing import Any

from .base import Backend
from .registry import factory_for
from .runner import Runner
from .store import Store

__all__ = ["DEFAULT_URL", "backend_from_url", "default_backend_url", "mask_url",
           "parts_from_url", "url_secrets"]

DEFAULT_URL = "sqlite:///runfox.db"


def default_backend_url() -> str:
    return os.environ.get("RUNFOX_BACKEND") or DEFAULT_URL


# Query parameters whose values are secrets (``?password=``, ``sslpassword``,
# ``aws_secret_access_key``, ``token`` ...).
_SECRET_PARAM = re.compile(r"([?&;][^=&;#]*(?:pass|pwd|secret|token|credential|key)"
                           r"[^=&;#]*=)([^&;#]*)", re.IGNORECASE)
# Where the host starts: an ``@`` followed by a host (and port) and then the end
# of the URL or its path, query or fragment. Hosts never contain ``@``.
_HOST_AFTER = re.compile(r"@(?=[\w.\-\[\]:%]*(?:$|[/?#]))")


def _userinfo_end(rest: str) -> int:
    """The index of the ``@`` ending the user and password in ``rest`` (the URL
    after ``://``), or -1. Passwords may hold an unencoded ``@``, ``/`` or
    ``?``, so this is the *last* ``@`` that a host follows; an ``@`` inside a
    query value may make it mask more than the password, never less."""
    if rest.startswith("/") or "@" not in rest:
        return -1
    ends = [m.start() for m in _HOST_AFTER.finditer(rest)]
    return ends[-1] if ends else rest.rfind("@")


def mask_url(url: str) -> str:
    """The URL with every password replaced by ``***``, safe to print.

    Masks the password of ``user:password@host`` (all of it up to the last
    ``@`` before the host, so an unencoded ``@`` in a password leaks nothing)
    and the value of any query parameter that names a secret (``?password=``,
    ``sslpassword=``, ``aws_secret_access_key=``, ``token=`` ...).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _mask_params(url)
    end = _userinfo_end(rest)
    if end < 0:
        return f"{scheme}://{_mask_params(rest)}"
    user, colon, _ = rest[:end].partition(":")
    userinfo = f"{user}:***" if colon else user
    return f"{scheme}://{userinfo}@{_mask_params(rest[end + 1:])}"


def _mask_params(text: str) -> str:
    return _SECRET_PARAM.sub(r"\1***", text)


def url_secrets(url: str) -> tuple[str, ...]:
    """The secrets ``mask_url`` hides in ``url``, longest first, for scrubbing a
    driver's message that may quote them (as a host name, say). The pieces of a
    password after an unencoded ``@`` are included with that ``@`` attached."""
    found: list[str] = [m.group(2) for m in _SECRET_PARAM.finditer(url) if m.group(2)]
    _, sep, rest = url.partition("://")
    end = _userinfo_end(rest) if sep else -1
    if end >= 0:
        _, colon, password = rest[:end].partition(":")
        if colon and password:
            found.append(password)
            pieces = password.split("@")
            found.extend(f"{piece}@" for piece in pieces[1:] if piece)
    return tuple(sorted(set(found), key=len, reverse=True))


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
