"""``Cache``: where step-cache entries live, one implementation per backend.

The pure part (keys, freshness, ``CacheEntry``) is ``runfox.cache``. A technology
implements five primitives:

- ``_get_many(keys)``: the decodable entries among ``keys``, by key. An entry that
  does not decode is left out (a miss) and logged with its key, never raised.
- ``_put(entry)``: store ``entry``, replacing any entry with its key (latest wins).
  Two writers of one key leave one of the two entries, whole.
- ``_list(fn)``: every entry, or those of one ``fn``.
- ``_delete(keys)``: remove those keys; how many there were.
- ``_clear(fn)``: remove every entry, or those of one ``fn``; how many there were.

The public methods (``get``, ``get_many``, ``put``, ``show``, ``list``, ``delete``,
``clear``) check their arguments once, here. ``runfox.testing.CacheContract`` is
the suite every implementation runs. A store hands out its cache with
``Store.cache()`` (``None``: the store keeps none, and cached steps simply run).
"""

from __future__ import annotations

import builtins
import json
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

from ..cache import CacheEntry
from ..jsonvalue import json_clone, json_copy

__all__ = ["Cache", "InMemoryCache", "decode_entry"]

logger = logging.getLogger("runfox.cache")


def decode_entry(key: str, fn: Any, version_json: Any, stored_at: Any, output: Any
                 ) -> CacheEntry | None:
    """An entry from stored parts (``version`` as JSON text), or ``None`` (logged) when
    they do not make one: a corrupt entry is a miss."""
    try:
        version = json.loads(version_json) if version_json is not None else None
        if isinstance(output, str | bytes):
            output = json.loads(output)
        if not isinstance(fn, str) or not isinstance(output, dict) or \
                isinstance(stored_at, bool) or not isinstance(stored_at, int | float):
            raise ValueError("fn, stored_at or output has the wrong type")
        return CacheEntry(key, fn, version, float(stored_at), output)
    except (TypeError, ValueError) as exc:
        logger.warning("cache entry %s does not decode (%s); treated as a miss", key, exc)
        return None


class Cache(ABC):
    """Step outputs by cache key (``runfox.cache.cache_key``), shared by every execution."""

    def get(self, key: str) -> CacheEntry | None:
        """The entry stored under ``key``, or ``None`` (absent, or not decodable)."""
        return self.get_many([key]).get(key)

    def get_many(self, keys: Iterable[str]) -> dict[str, CacheEntry]:
        """The decodable entries among ``keys``, by key (what the Backend reads per claim)."""
        wanted = list(dict.fromkeys(keys))
        return self._get_many(wanted) if wanted else {}

    def put(self, key: str, output: dict[str, Any], fn: str, version: Any, now: float
            ) -> CacheEntry:
        """Store ``output`` (a successful step output) under ``key``; latest wins."""
        if not isinstance(key, str) or not key:
            raise ValueError("a cache key must be a non-empty string")
        entry = CacheEntry(key, fn, json_copy(version, "version"), float(now),
                           json_copy(output, "output"))
        self._put(entry)
        return entry

    def show(self, key: str) -> CacheEntry | None:
        """``get`` under the CLI's name (``runfox cache show KEY``)."""
        return self.get(key)

    def list(self, fn: str | None = None) -> builtins.list[CacheEntry]:
        """Every entry (or those of ``fn``), newest first."""
        return sorted(self._list(fn), key=lambda e: (-e.stored_at, e.key))

    def delete(self, keys: Iterable[str]) -> int:
        """Remove the entries of ``keys``; returns how many there were."""
        wanted = list(dict.fromkeys(keys))
        return self._delete(wanted) if wanted else 0

    def clear(self, fn: str | None = None) -> int:
        """Remove every entry (or those of ``fn``); returns how many there were."""
        return self._clear(fn)

    def close(self) -> None:
        """Release what the cache holds (its store's connection is the store's)."""

    @abstractmethod
    def _get_many(self, keys: builtins.list[str]) -> dict[str, CacheEntry]: ...

    @abstractmethod
    def _put(self, entry: CacheEntry) -> None: ...

    @abstractmethod
    def _list(self, fn: str | None) -> builtins.list[CacheEntry]: ...

    @abstractmethod
    def _delete(self, keys: builtins.list[str]) -> int: ...

    @abstractmethod
    def _clear(self, fn: str | None) -> int: ...


class InMemoryCache(Cache):
    """A dict under a lock; entries are copied in and out."""

    def __init__(self) -> None:
        self._entries: dict[str, CacheEntry] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _copy(entry: CacheEntry) -> CacheEntry:
        return CacheEntry(entry.key, entry.fn, json_clone(entry.version), entry.stored_at,
                          json_clone(entry.output))

    def _get_many(self, keys: builtins.list[str]) -> dict[str, CacheEntry]:
        with self._lock:
            found = {k: self._entries[k] for k in keys if k in self._entries}
        return {k: self._copy(e) for k, e in found.items()}

    def _put(self, entry: CacheEntry) -> None:
        with self._lock:
            self._entries[entry.key] = entry

    def _list(self, fn: str | None) -> builtins.list[CacheEntry]:
        with self._lock:
            entries = [e for e in self._entries.values() if fn is None or e.fn == fn]
        return [self._copy(e) for e in entries]

    def _delete(self, keys: builtins.list[str]) -> int:
        with self._lock:
            return sum(self._entries.pop(k, None) is not None for k in keys)

    def _clear(self, fn: str | None) -> int:
        with self._lock:
            doomed = [k for k, e in self._entries.items() if fn is None or e.fn == fn]
            for k in doomed:
                del self._entries[k]
            return len(doomed)

    def __len__(self) -> int:
        return len(self._entries)
