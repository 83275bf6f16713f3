"""Retry policy: when a failed attempt may run again.

The policy is data in the spec and is applied by the pure graph, never by a
backend. Jitter is derived from a hash of the attempt's identity rather than from
a random number generator, so the graph stays a pure function: the same record
and the same failure always give the same delay.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import importlib
from dataclasses import dataclass
from typing import Any

__all__ = ["BACKOFFS", "TIMEOUT_ERROR", "RetryPolicy", "error_class", "type_matches"]

BACKOFFS = ("none", "fixed", "linear", "exponential")

#: The error type the harness records when an attempt runs out of time.
TIMEOUT_ERROR = "TimeoutError"


@functools.lru_cache(maxsize=1024)
def error_class(name: str) -> type[BaseException] | None:
    """The exception class a filter entry names, or ``None`` when it cannot be found.

    A bare name is looked up in ``builtins`` only; a dotted name
    ``package.module.Class`` is imported with ``importlib``. Anything that is not
    an exception class, or whose import fails for any reason, is ``None``: such a
    name matches recorded types by spelling only. Cached, so each name is imported
    at most once per process.
    """
    if "." not in name:
        found = getattr(builtins, name, None)
    else:
        module_name, _, attr = name.rpartition(".")
        try:
            found = getattr(importlib.import_module(module_name), attr, None)
        except Exception:  # an unimportable name matches by spelling only
            return None
    if isinstance(found, type) and issubclass(found, BaseException):
        return found
    return None


def _recorded_class(kind: str, filters: tuple[str, ...]) -> type[BaseException] | None:
    """The class of a recorded error type, found without importing anything new.

    The harness records bare class names (``ConnectTimeout``). A bare name is a
    builtin, or the attribute of that name in a module a filter entry named (those
    were imported by ``error_class``); a dotted recorded name is resolved only if
    its module is one of those. Data never makes runfox import a module.
    """
    if "." not in kind:
        found = getattr(builtins, kind, None)
        if isinstance(found, type) and issubclass(found, BaseException):
            return found
        modules = [f.rpartition(".")[0] for f in filters if "." in f]
        attr = kind
    else:
        module_name, _, attr = kind.rpartition(".")
        modules = [f.rpartition(".")[0] for f in filters if f.rpartition(".")[0] == module_name]
    for module_name in modules:
        cls = error_class(f"{module_name}.{attr}")
        if cls is not None:
            return cls
    return None


def type_matches(kind: str, filters: tuple[str, ...]) -> bool:
    """Whether a recorded error type ``kind`` is one of ``filters`` or a subclass of one.

    Spelling first: ``kind`` equals an entry, or its last dotted part does
    (``requests.exceptions.Timeout`` and ``Timeout`` match each other). Then
    classes: when both the recorded type (see ``_recorded_class``) and an entry
    (``error_class``) resolve, a subclass matches (``ConnectionRefusedError``
    matches ``ConnectionError``). A name that does not resolve matches only by
    spelling.
    """
    short = kind.rpartition(".")[2]
    for entry in filters:
        if kind == entry or short == entry.rpartition(".")[2]:
            return True
    recorded = _recorded_class(kind, filters)
    if recorded is None:
        return False
    for entry in filters:
        cls = error_class(entry)
        if cls is not None and issubclass(recorded, cls):
            return True
    return False


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to wait before attempt ``n + 1`` after attempt ``n`` failed.

    - ``backoff``: ``none`` (retry at once), ``fixed`` (``delay``), ``linear``
      (``delay * n``) or ``exponential`` (``delay * 2 ** (n - 1)``).
    - ``delay``: the base delay in seconds.
    - ``max_delay``: the cap, in seconds, applied before jitter.
    - ``jitter``: a fraction in ``[0, 1]``; the delay is reduced by up to that
      fraction, spreading retries of many steps that failed together.
    - ``on``: when given, only failed attempts whose error type matches one of
      these names (``type_matches``: the name, a subclass where the class can be
      found) are retried; any other error is terminal.
    - ``on_timeout``: ``False`` makes a ``TimeoutError`` terminal, whatever ``on``
      says.

    ``WorkerLost`` (a worker died holding the job) is not filtered: the graph
    retries it by its own rule (``graph.WORKER_LOST_CAP``).
    """

    backoff: str = "none"
    delay: float = 1.0
    max_delay: float = 300.0
    jitter: float = 0.0
    on: tuple[str, ...] | None = None
    on_timeout: bool = True

    def retries(self, error_type: str) -> bool:
        """Whether a failed attempt with this error type may be retried (budget aside)."""
        if not self.on_timeout and type_matches(error_type, (TIMEOUT_ERROR,)):
            return False
        return self.on is None or type_matches(error_type, self.on)

    def delay_for(self, attempt: int, seed: str = "") -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if self.backoff == "none":
            base = 0.0
        elif self.backoff == "fixed":
            base = self.delay
        elif self.backoff == "linear":
            base = self.delay * attempt
        else:
            base = self.delay * 2.0 ** min(attempt - 1, 62)
        base = min(base, self.max_delay)
        if self.jitter and base:
            digest = hashlib.blake2b(f"{seed}#{attempt}".encode(), digest_size=8).digest()
            fraction = int.from_bytes(digest, "big") / 2**64
            base *= 1.0 - self.jitter * fraction
        return base

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "backoff": self.backoff,
            "delay": self.delay,
            "max_delay": self.max_delay,
            "jitter": self.jitter,
        }
        if self.on is not None:
            data["on"] = list(self.on)
        if not self.on_timeout:
            data["on_timeout"] = False
        return data
