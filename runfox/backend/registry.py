"""Backend URL schemes: which factory builds the store and runner for a URL.

A *factory* is a callable ``factory(url, **options) -> (store, runner)``; it
parses the URL itself and rejects options it does not know. The scheme of
``postgresql+psycopg://...`` is looked up as ``postgresql+psycopg`` first, then
as ``postgresql``, so one factory serves every driver of a database.

Where a scheme's factory comes from, first match wins:

1. ``register(scheme, factory)`` called in this process;
2. an entry point in the group ``runfox.backends`` of an installed
   distribution, named after the scheme, whose value is the factory
   (``demo = "runfox_demo:parts_from_url"``); the group is read once, on the
   first lookup of a scheme not registered in-process, and a factory is
   imported only when its scheme is used;
3. runfox's own schemes (``sqlite``, ``postgresql``, ``postgres``, ``mysql``,
   ``mariadb``, ``aws``, ``memory``), which runfox also declares as entry
   points; the table here keeps a checkout that was never installed working.

A third-party package adds a scheme with, in its ``pyproject.toml``::

    [project.entry-points."runfox.backends"]
    demo = "runfox_demo:parts_from_url"

and proves its store and runner with ``runfox.testing``'s contract suites.
Two installed distributions declaring the same scheme is an error at lookup
(runfox cannot know which one was meant); ``register`` settles it.
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from ..errors import BackendError
from .runner import InProcessRunner, Runner
from .store import InMemoryStore, Store

__all__ = [
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "BackendFactory",
    "factory_for",
    "known_schemes",
    "memory_parts",
    "refresh",
    "register",
    "unregister",
]

#: The entry point group third-party backends declare their schemes in.
ENTRY_POINT_GROUP = "runfox.backends"

#: ``factory(url, **options) -> (store, runner)``.
BackendFactory = Callable[..., tuple[Store, Runner]]

# RFC 3986: a scheme is a letter followed by letters, digits, "+", "-" or ".".
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")

_SQL = "runfox.backend.sql:parts_from_url"
#: runfox's own schemes; the same table is declared as entry points in pyproject.toml.
BUILTIN: dict[str, str] = {
    "sqlite": _SQL,
    "postgresql": _SQL,
    "postgres": _SQL,
    "mysql": _SQL,
    "mariadb": _SQL,
    "aws": "runfox.backend.aws:parts_from_url",
    "memory": "runfox.backend.registry:memory_parts",
}

_lock = threading.RLock()  # a factory's module may call register() on import
_registered: dict[str, BackendFactory | str] = {}
_declared: dict[str, list[EntryPoint]] | None = None  # None: the group is not read yet
_loaded: dict[str, BackendFactory] = {}  # resolved entry points and built-ins


def memory_parts(url: str, **options: Any) -> tuple[Store, Runner]:
    """``memory://``: an in-memory store and an in-process runner (one process only)."""
    if options:
        raise ValueError(f"unknown option(s) for a memory:// backend: "
                         f"{', '.join(sorted(options))}")
    return InMemoryStore(), InProcessRunner()


def _check_scheme(scheme: str) -> str:
    normal = scheme.lower()
    if not _SCHEME.fullmatch(normal):
        raise ValueError(f"{scheme!r} is not a URL scheme (a letter, then letters, digits, "
                         "'+', '-' or '.')")
    return normal


def register(scheme: str, factory: BackendFactory | str) -> None:
    """Use ``factory`` for URLs whose scheme is ``scheme`` in this process.

    ``factory`` is the callable or a ``"package.module:attr"`` reference to it
    (imported on first use). A registration replaces any earlier one for the
    scheme and takes precedence over entry points and built-ins.

    Raises:
        ValueError: ``scheme`` is not a valid URL scheme.
        TypeError: ``factory`` is neither callable nor a string.
    """
    normal = _check_scheme(scheme)
    if not callable(factory) and not isinstance(factory, str):
        raise TypeError(f"factory for {scheme!r} must be callable or 'module:attr', "
                        f"not {type(factory).__name__}")
    with _lock:
        _registered[normal] = factory
        _loaded.pop(normal, None)


def unregister(scheme: str) -> None:
    """Forget a ``register`` call; entry points and built-ins apply again."""
    normal = _check_scheme(scheme)
    with _lock:
        _registered.pop(normal, None)
        _loaded.pop(normal, None)


def _entry_points() -> dict[str, list[EntryPoint]]:
    global _declared
    if _declared is None:
        found: dict[str, list[EntryPoint]] = {}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            found.setdefault(ep.name.lower(), [])
            # A distribution seen twice on sys.path declares the same value twice.
            if all(ep.value != other.value for other in found[ep.name.lower()]):
                found[ep.name.lower()].append(ep)
        _declared = found
    return _declared


def refresh() -> None:
    """Read the entry point group again (after installing a package at run time)."""
    global _declared
    with _lock:
        _declared = None
        _loaded.clear()


def known_schemes() -> list[str]:
    """Every scheme a URL may use now, sorted."""
    with _lock:
        return sorted(set(_registered) | set(_entry_points()) | set(BUILTIN))


def _import(reference: str, scheme: str, origin: str) -> BackendFactory:
    module_name, _, attr = reference.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in filter(None, attr.split(".")):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise BackendError(f"backend scheme {scheme!r} ({origin}): cannot load "
                           f"{reference!r}: {exc}") from exc
    if not callable(target):
        raise BackendError(f"backend scheme {scheme!r} ({origin}): {reference!r} is a "
                           f"{type(target).__name__}, not a factory")
    return target


def _origin(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    name = f"{dist.name} {dist.version}" if dist is not None else "an unnamed distribution"
    return f"entry point {ep.name} = {ep.value} of {name}"


def _resolve(name: str) -> BackendFactory | None:
    """The factory for one exact scheme, or None; call with ``_lock`` held."""
    if name in _registered:
        factory = _registered[name]
        if isinstance(factory, str):
            factory = _import(factory, name, "registered in this process")
            _registered[name] = factory
        return factory
    if name in _loaded:
        return _loaded[name]
    declared = _entry_points().get(name, [])
    if len(declared) > 1:
        raise BackendError(
            f"backend scheme {name!r} is declared by more than one installed package ("
            + "; ".join(_origin(ep) for ep in declared)
            + f"): uninstall one, or call runfox.backend.registry.register({name!r}, ...)")
    if declared:
        factory = _import(declared[0].value, name, _origin(declared[0]))
    elif name in BUILTIN:
        factory = _import(BUILTIN[name], name, "built in")
    else:
        return None
    _loaded[name] = factory
    return factory


def factory_for(scheme: str) -> BackendFactory:
    """The factory for ``scheme`` (``"postgresql+psycopg"`` falls back to ``"postgresql"``).

    Raises:
        ValueError: no package provides the scheme; the message lists those known.
        BackendError: the scheme's factory cannot be imported, or two installed
            packages declare it.
    """
    normal = _check_scheme(scheme)
    candidates = [normal]
    if "+" in normal:
        candidates.append(normal.split("+", 1)[0])
    with _lock:
        for name in candidates:
            factory = _resolve(name)
            if factory is not None:
                return factory
    raise ValueError(
        f"unknown backend URL scheme {scheme!r}; known: {', '.join(known_schemes())}. "
        f"A package adds a scheme with an entry point in the group {ENTRY_POINT_GROUP!r} "
        "(NAME = \"package.module:factory\"), or code calls "
        "runfox.backend.registry.register(NAME, factory)")
