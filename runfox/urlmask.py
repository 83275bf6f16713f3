"""Masking the secrets in a backend URL, so it can be printed or logged.

A pure string module in the foundation layer: the CLI, ``runfox.backend.urls``
and the SQL layer (which scrubs drivers' messages) all import it from here;
``runfox.backend.urls`` re-exports both names.
"""

from __future__ import annotations

import re

__all__ = ["mask_url", "url_secrets"]

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
