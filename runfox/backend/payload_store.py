"""``PayloadStore``: where offloaded blobs live, and ``Offloader``, which uses one.

The reference format and the packing rules are ``runfox.payloads`` (pure). A
technology implements three primitives on blobs keyed ``sha256:<hex>`` (a blob is
UTF-8 text: the JSON ``runfox.payloads.encode`` makes, ASCII in fact):

- ``_put(key, blob)``: store ``blob`` under ``key``. Blobs are immutable and
  named by their content, so writing a key that exists is harmless (either copy
  may stay; they are equal).
- ``_get(key)``: the blob, or ``None`` when there is none.
- ``_delete(keys)``: remove those keys; how many there were.

and, when puts join a transaction that may still roll back, overrides
``_once_stored(callback)`` to call it after the commit (``SqlPayloads``).

The public ``put``, ``get`` and ``delete`` check keys once, here, and ``get``
checks that the blob still hashes to its key (a damaged blob is a
``CorruptRecord``, never silently wrong data). ``runfox.testing.PayloadContract``
is the suite every implementation runs: ``InMemoryPayloads`` (here),
``SqlPayloads`` (the ``runfox_payloads`` table) and ``S3Payloads`` (a bucket).

``Offloader`` binds a payload store to a threshold and a bounded in-process
cache of decoded blobs (safe: a key always names the same value). Stores call
``pack_record`` before they encode a record and ``unpack_record`` after they
decode one; runners call ``pack`` and ``unpack`` on job inputs, and
``pack_output`` and ``unpack_output`` on result outputs, that travel through
rows and messages (a result output is packed per top-level key, as a step
output is, so the record later refers to the same blobs).

So that a large value costs little beyond its bytes, the ``Offloader`` encodes a
value once per write (``encoding_once``), hashes a blob once (its own put trusts
the key it just computed; ``get`` checks what it reads), and does not send a blob
again that this process stored or read within ``TRUST_STORED_SECONDS``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from .. import payloads
from ..errors import CorruptRecord, PayloadMissing
from ..jsonvalue import compact_json
from ..records import WorkflowRecord

__all__ = ["DEFAULT_OFFLOAD_BYTES", "OFFLOAD_ENV", "InMemoryPayloads", "Offloader",
           "PayloadStore", "offload_threshold"]

#: Values whose JSON is over this many bytes are offloaded by default (SQL stores).
DEFAULT_OFFLOAD_BYTES = 256 * 1024
#: The environment variable that sets the threshold when none is given.
OFFLOAD_ENV = "RUNFOX_OFFLOAD_BYTES"
#: Bytes of decoded blobs an ``Offloader`` keeps in memory by default.
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
#: Seconds for which an ``Offloader`` takes a blob it stored (committed) or read
#: to be still in the store, and so does not send it again. Nothing in runfox
#: deletes blobs behind its back (``Offloader.delete`` forgets what it deletes);
#: the bound covers an operator's clean-up or an S3 lifecycle rule, which act
#: on blobs days old.
TRUST_STORED_SECONDS = 3600.0


def offload_threshold(value: int | str | None, default: int | None,
                      env: dict[str, str] | None = None) -> int | None:
    """The threshold a setting means: bytes, or ``None`` for "never offload".

    ``value`` is what a constructor, URL (``?offload=``) or option gave: a
    positive number of bytes, or ``"off"``/``0`` to disable offloading. When it
    is ``None`` the ``RUNFOX_OFFLOAD_BYTES`` variable decides, then ``default``.

    Raises:
        ValueError: not a non-negative whole number nor ``off``; the message
            names the setting.
    """
    source = "offload"
    if value is None:
        value = (os.environ if env is None else env).get(OFFLOAD_ENV) or None
        source = OFFLOAD_ENV
        if value is None:
            return default
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("off", "none", "never", "0"):
            return None
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{source}={value!r}: expected a number of bytes or 'off'"
                             ) from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{source}={value!r}: expected a number of bytes >= 0 or 'off'")
    return value or None


class PayloadStore(ABC):
    """Immutable blobs by content key (``sha256:<hex>``)."""

    #: Where blobs are kept, for messages (``runfox_payloads``, ``s3://bucket/prefix``).
    where: str = "the payload store"

    def put(self, blob: bytes) -> str:
        """Store ``blob``; returns its key. Storing the same blob again is harmless."""
        key = payloads.blob_key(blob)
        self._put(key, bytes(blob))
        return key

    def put_keyed(self, key: str, blob: bytes) -> None:
        """Store ``blob`` under ``key``, which must be its content key.

        Raises:
            ValueError: ``key`` is malformed or is not the blob's key.
        """
        if payloads.blob_key(blob) != payloads.check_key(key):
            raise ValueError(f"payload key {key} does not match the blob's content")
        self._put(key, bytes(blob))

    def get(self, key: str) -> bytes:
        """The blob stored under ``key``.

        Raises:
            ValueError: ``key`` is not a payload key.
            PayloadMissing: no blob has that key.
            CorruptRecord: the stored blob no longer matches its key.
        """
        blob = self._get(payloads.check_key(key))
        if blob is None:
            raise PayloadMissing(key, f"not in {self.where}")
        if payloads.blob_key(blob) != key:
            raise CorruptRecord(key, f"the blob in {self.where} does not match its key")
        return blob

    def delete(self, keys: Iterable[str]) -> int:
        """Remove the blobs of ``keys``; returns how many there were."""
        wanted = [payloads.check_key(k) for k in dict.fromkeys(keys)]
        return self._delete(wanted) if wanted else 0

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._get(payloads.check_key(key)) is not None

    def close(self) -> None:
        """Release what the store holds (a shared database's connections are not its own)."""

    def _once_stored(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the blobs ``_put`` so far are durable: at once
        here; a store whose puts join a transaction waits for its commit."""
        callback()

    @abstractmethod
    def _put(self, key: str, blob: bytes) -> None: ...

    @abstractmethod
    def _get(self, key: str) -> bytes | None: ...

    @abstractmethod
    def _delete(self, keys: list[str]) -> int: ...


class InMemoryPayloads(PayloadStore):
    """Blobs in a dict under a lock; gone when the process exits."""

    where = "the in-memory payload store"

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def _put(self, key: str, blob: bytes) -> None:
        with self._lock:
            self._blobs.setdefault(key, blob)

    def _get(self, key: str) -> bytes | None:
        with self._lock:
            return self._blobs.get(key)

    def _delete(self, keys: list[str]) -> int:
        with self._lock:
            return sum(self._blobs.pop(k, None) is not None for k in keys)

    def __len__(self) -> int:
        return len(self._blobs)


class Offloader:
    """A payload store with a threshold and a cache: what stores and runners call.

    Args:
        store: where blobs go.
        threshold: values whose JSON is over this many bytes are offloaded;
            ``None``: none are (references already stored are still read, and
            user objects carrying ``$runfox_ref`` are still escaped).
        cache_bytes: decoded blobs kept in memory, by key, up to about this many
            blob bytes. A blob is immutable, so a cached value never goes stale.

    Values handed out by ``unpack`` are shared with the cache: runfox never
    changes a record's values, and stores that hand records to callers copy
    them (``Store.load``).
    """

    def __init__(self, store: PayloadStore, threshold: int | None = DEFAULT_OFFLOAD_BYTES,
                 *, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if threshold is not None and threshold <= 0:
            raise ValueError("threshold must be > 0 bytes, or None to offload nothing")
        self.store = store
        self.threshold = threshold
        self.cache_bytes = cache_bytes
        # key -> (value, size, when this process last found it stored); and
        # id(value) -> (value, reference) for values that came from or went to
        # the store, so packing them again is free.
        self._values: OrderedDict[str, tuple[Any, int, float]] = OrderedDict()
        self._refs: dict[int, tuple[Any, dict[str, Any]]] = {}
        self._held = 0
        self._lock = threading.Lock()
        self._local = threading.local()  # ``encoding_once``'s memos, per thread

    def __repr__(self) -> str:
        return f"Offloader({self.store!r}, threshold={self.threshold})"

    # -- values -------------------------------------------------------------------

    def pack(self, value: Any) -> Any:
        """``value``, or a reference to it (stored first) when it is over the threshold."""
        return self.pack_encoded(value)[0]

    def pack_json(self, value: Any) -> str:
        """The JSON text (``compact_json``) of ``pack(value)``, for a store's row.

        A value that stays inline was encoded to measure it: that text is
        returned rather than made again."""
        packed, blob = self.pack_encoded(value)
        return compact_json(packed) if blob is None else blob.decode("ascii")

    def pack_encoded(self, value: Any) -> tuple[Any, bytes | None]:
        """``pack(value)`` and the blob of an inline result, as ``payloads.pack_encoded``."""
        if value is None or isinstance(value, bool | int | float):
            return value, None
        known = self._known(value)
        if known is not None:
            return known, None
        packed, blob = payloads.pack_encoded(value, self.threshold, self._put, self._encode)
        if packed is not value:
            self._share(value, packed)
        return packed, blob

    def pack_output(self, value: Any) -> Any:
        """``payloads.pack_object`` with this store and threshold: a step output or a
        result output, packed per top-level key.

        A value this offloader stored or read lately (by identity: the one
        ``unpack_output`` handed out, or one packed earlier in this write) is
        replaced by its reference without being encoded or hashed again.
        """
        if type(value) is not dict:
            return self.pack(value)
        whole = self._known(value)
        if whole is not None:
            return whole
        with self.encoding_once():
            found: dict[str, Any] = {}
            for key, item in value.items():
                if item is None or isinstance(item, bool | int | float):
                    continue
                ref = self._known(item)
                if ref is not None:
                    found[key] = ref
            source = {**value, **found} if found else value
            packed = payloads.pack_object(source, self.threshold, self._put, self._encode)
            if packed is source:
                return packed
            if payloads.is_ref(packed):
                self._share(value, packed)
                return packed
            for key, ref in packed.items():
                if ref is not source[key]:
                    self._share(value[key], ref)
            return packed

    def unpack(self, value: Any) -> Any:
        """The value a reference stands for, or ``value`` itself.

        Raises:
            PayloadMissing: the reference names a blob the store does not hold.
        """
        return payloads.unpack(value, self._get)

    def unpack_output(self, value: Any) -> Any:
        """What ``pack_output`` made (or ``pack``: a whole reference), as values.

        Raises:
            PayloadMissing: a reference names a blob the store does not hold.
        """
        return payloads.unpack_object(value, self._get)

    def pack_record(self, record: WorkflowRecord, previous: WorkflowRecord | None
                    ) -> WorkflowRecord:
        """``payloads.pack_record`` with this store and threshold (see there)."""
        with self.encoding_once():
            return payloads.pack_record(record, previous, self.pack, self.pack_output)

    def unpack_record(self, record: WorkflowRecord, base: WorkflowRecord | None = None
                      ) -> WorkflowRecord:
        """``payloads.unpack_record`` with this store (missing blobs become defects)."""
        return payloads.unpack_record(record, base, self._get)

    def _known(self, value: Any) -> dict[str, Any] | None:
        """The reference of ``value`` when this process stored or read it (by identity)."""
        with self._lock:
            known = self._refs.get(id(value))
        if known is None:
            known = self._block("refs").get(id(value))
        return known[1] if known is not None and known[0] is value else None

    def _share(self, value: Any, ref: dict[str, Any]) -> None:
        """``value`` was just stored as ``ref``: known within this write at once, to
        every thread once the blob is durable (a rolled back put must be sent again)."""
        self._block("refs")[id(value)] = (value, ref)
        self.store._once_stored(lambda: self._remember(ref, value))

    @contextmanager
    def encoding_once(self) -> Iterator[None]:
        """Within this block (one write, on this thread), a value is encoded once.

        A step's output ``{"k": big}`` is encoded to be measured (and offloaded),
        then ``big`` becomes the state key ``k`` and is measured on its own: the
        object's blob is built from its values' blobs (``payloads.encode_object``)
        and those are kept, by identity, until the block ends; so are the
        references made in it (not yet shared with other threads while the
        write's transaction may still roll back). Blocks nest.
        """
        if getattr(self._local, "blobs", None) is not None:
            yield
            return
        self._local.blobs, self._local.refs = {}, {}
        try:
            yield
        finally:
            self._local.blobs = self._local.refs = None

    def _block(self, name: str) -> dict[int, Any]:
        """The open ``encoding_once`` block's memo ``name`` (a throwaway one outside)."""
        memo: dict[int, Any] | None = getattr(self._local, name, None)
        return {} if memo is None else memo

    def delete(self, keys: Iterable[str]) -> int:
        """Remove blobs from the store and this cache; how many the store had.

        For ``runfox prune``-style clean-ups and tests: a record that still refers
        to a deleted blob loads with a ``PayloadMissing`` defect.
        """
        wanted = list(dict.fromkeys(keys))
        with self._lock:
            for key in wanted:
                held = self._values.pop(key, None)
                if held is not None:
                    self._refs.pop(id(held[0]), None)
                    self._held -= held[1]
        return self.store.delete(wanted)

    # -- encoding and the cache ---------------------------------------------------------

    def _encode(self, value: Any) -> bytes:
        memo: dict[int, tuple[Any, bytes]] | None = getattr(self._local, "blobs", None)
        if memo is None:
            return payloads.encode(value)
        held = memo.pop(id(value), None)
        if held is not None and held[0] is value:
            return held[1]
        if type(value) is dict and all(type(k) is str for k in value):
            blob, parts = payloads.encode_object(value)
            for item, part in parts:
                memo[id(item)] = (item, part)
        else:
            blob = payloads.encode(value)
        # Kept for the next packing of the same object in this write: a value
        # of a step output that stays inline is measured again as a state key.
        memo[id(value)] = (value, blob)
        return blob

    def _put(self, key: str, blob: bytes) -> None:
        # ``payloads.pack`` computed ``key`` from ``blob`` just now: no second hash.
        with self._lock:
            held = self._values.get(key)
        if held is not None and time.monotonic() - held[2] < TRUST_STORED_SECONDS:
            return  # this process stored or read it lately: it is there
        self.store._put(key, blob)

    def _get(self, key: str) -> Any:
        with self._lock:
            held = self._values.get(key)
            if held is not None:
                self._values.move_to_end(key)
                return held[0]
        blob = self.store.get(key)  # checks the blob against its key
        try:
            value = json.loads(blob)
        except ValueError as exc:
            raise CorruptRecord(key, f"the blob in {self.store.where} is not JSON: {exc}"
                                ) from exc
        self._remember(payloads.make_ref(blob, key), value)
        return value

    def _remember(self, ref: dict[str, Any], value: Any) -> None:
        key, size = ref[payloads.REF_KEY], ref["size"]
        if size > self.cache_bytes:
            return
        now = time.monotonic()
        with self._lock:
            held = self._values.get(key)
            if held is not None:
                self._values[key] = (held[0], held[1], now)
                return
            self._values[key] = (value, size, now)
            self._refs[id(value)] = (value, ref)
            self._held += size
            while self._held > self.cache_bytes and self._values:
                _, (old, old_size, _) = self._values.popitem(last=False)
                self._refs.pop(id(old), None)
                self._held -= old_size

