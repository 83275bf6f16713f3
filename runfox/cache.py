"""The step cache, its pure part: keys, freshness, entries, the lookup a claim uses.

A step with ``cache: true`` (or ``cache: {version, max_age}``, per step or in
``defaults``) is looked up when it is claimed. Its key is

    sha256(canonical JSON of {"fn": fn, "inputs": resolved inputs, "version": version})

in hex: the step's ``fn``, the inputs it would be sent, and the cache ``version``
(``null`` when not given), never the execution id, so one entry serves every
execution and every workflow that calls the same ``fn`` with the same inputs.
Canonical JSON is sorted keys, no spaces, non-ASCII kept, no NaN (inputs are
already checked to be JSON at claim). An entry is fresh while
``now - stored_at <= max_age`` (always, without ``max_age``); a stale entry is a
miss. Bumping ``version`` changes every key of the step: the old entries are
never read again.

Where entries live is a backend's business (``runfox.backend.cache_store.Cache``);
the graph only sees a ``CacheLookup``: the entries the Backend has read so far
and the keys it still wants. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CacheEntry", "CacheLookup", "CachePolicy", "cache_key", "canonical_json",
           "is_fresh"]


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """A step's ``cache`` setting: the ``version`` in its keys and the ``max_age`` (seconds,
    ``None``: entries never go stale)."""

    version: Any = None
    max_age: float | None = None


def canonical_json(value: Any) -> str:
    """``value`` as canonical JSON: sorted keys, compact, non-ASCII kept, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def cache_key(fn: str, inputs: Any, version: Any = None) -> str:
    """The cache key of calling ``fn`` with ``inputs`` under cache ``version`` (64 hex)."""
    text = canonical_json({"fn": fn, "inputs": inputs, "version": version})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_fresh(stored_at: float, now: float, max_age: float | None) -> bool:
    """The freshness rule: ``now - stored_at <= max_age``; no ``max_age``: always fresh."""
    return max_age is None or now - stored_at <= max_age


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One stored output: the key, the ``fn`` and ``version`` it was stored under, when
    (epoch seconds) and the output itself (a successful one: only those are stored)."""

    key: str
    fn: str
    version: Any
    stored_at: float
    output: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "fn": self.fn, "version": self.version,
                "stored_at": self.stored_at, "output": self.output}


@dataclass(slots=True)
class CacheLookup:
    """What ``graph.advance`` may consult: entries read so far (``None``: a miss) and the
    keys of claimable steps it met that are not read yet (``wanted``).

    The graph never claims a cached step whose key is in neither: it leaves it
    ready and appends the key to ``wanted``; the Backend reads those keys
    (``Cache.get_many``) and calls ``advance`` again on the record it returned.
    """

    entries: dict[str, CacheEntry | None] = field(default_factory=dict)
    wanted: list[str] = field(default_factory=list)
    #: ``(step_id, run_id) -> (inputs, key)`` of steps whose key was wanted: the next
    #: ``advance`` claims the step with those very inputs instead of resolving them
    #: and hashing them again (the key always matches the inputs the step runs with).
    resolved: dict[tuple[str, int], tuple[Any, str]] = field(default_factory=dict)
