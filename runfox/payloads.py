"""Large payloads by reference: the reference format, and packing values into it.

A JSON value too large to travel inside a record, a task row or a queue message
is stored once as a *blob* (its compact JSON text, ASCII) in a payload store
(``runfox.backend.payload_store``), and the record keeps a *reference* in its
place::

    {"$runfox_ref": "sha256:<64 hex digits>", "size": 5242880, "preview": "{\\"rows\\":[..."}

The key is the SHA-256 of the blob, so blobs are immutable: writing one twice is
harmless, two executions with the same output share one blob, and a process may
cache a blob by key for as long as it likes. ``size`` is the blob's length in
bytes and ``preview`` its first ``PREVIEW_CHARS`` characters, so ``runfox
status`` can describe the value without fetching it.

Which values are packed: whole values at fixed places of a record (the
workflow's ``inputs`` and ``outcome``, and each key of the shared ``state`` on
its own) and whole job inputs on a queue. A step's ``output`` and ``inputs``,
and a result output on a queue, are objects whose values come from or go to
state keys: they are packed per top-level key (``pack_object``). When such an
object's JSON is over the threshold its largest values become references,
largest first, until the rest fits, and it stays an object (``{"rows":
{"$runfox_ref": ...}, "count": 3}``); the state key the value lands in, and
the inputs of a step that reads it, are then the same blob, stored and hashed
once. Only when the rest cannot fit that way (many small keys, or a threshold
smaller than a reference) is the whole object one reference, as records written
before schema 11 hold every large output. A loader resolves both shapes: a
whole reference first, then references among the object's top-level values.
Nothing deeper is ever replaced, so expressions, branches and executors see
plain values once a store has unpacked them.

A user value at one of those places that is a JSON object with the key
``$runfox_ref`` but is not a well-formed reference is always offloaded,
whatever its size: its blob holds it verbatim and the place holds a real
reference, so it can never be mistaken for one. A value that has exactly the
shape of a reference is read as one (runfox never hands references to
executors, so only a value built to look like one has it).

This module is pure: ``pack``, ``unpack`` and the record functions take the
blob store's ``put`` and ``get`` as arguments and do no I/O of their own.

A value is encoded at most once per write: ``pack_encoded`` hands back the
blob it measured (a value that stays inline is written as that text), and
``encode_object`` builds an object's blob from its values' blobs, so a
caller that packs those values next (a step output's keys become state keys)
can reuse them (``runfox.backend.payload_store.Offloader.encoding_once``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from typing import Any

from .errors import CorruptRecord, PayloadMissing
from .jsonvalue import compact_json
from .records import Defect, StepRecord, WorkflowRecord

__all__ = [
    "PREVIEW_CHARS",
    "REF_KEY",
    "Encode",
    "Get",
    "Put",
    "blob_key",
    "check_key",
    "describe",
    "encode",
    "encode_object",
    "holds_ref",
    "is_ref",
    "make_ref",
    "needs_escape",
    "pack",
    "pack_encoded",
    "pack_object",
    "pack_record",
    "unpack",
    "unpack_object",
    "unpack_record",
]

#: The key that marks a reference.
REF_KEY = "$runfox_ref"
#: How many characters of the JSON text a reference keeps as its preview.
PREVIEW_CHARS = 80

_KEY = re.compile(r"sha256:[0-9a-f]{64}\Z")
_REF_FIELDS = frozenset({REF_KEY, "size", "preview"})

#: ``put(key, blob)``: store a blob under its key (idempotent).
Put = Callable[[str, bytes], None]
#: ``get(key)``: the value stored under ``key``, decoded; raises ``PayloadMissing``.
Get = Callable[[str], Any]
#: ``encode(value)``: the blob of ``value`` (``encode``, or a memo of its results).
Encode = Callable[[Any], bytes]


def encode(value: Any) -> bytes:
    """The blob of ``value``: compact JSON, keys in their order, ASCII only (so it is
    valid UTF-8 and any text column holds it, whatever the strings contain)."""
    return compact_json(value).encode("ascii")


def encode_object(value: Mapping[str, Any]) -> tuple[bytes, list[tuple[Any, bytes]]]:
    """``encode(value)`` of an object with string keys, and the blobs of its values
    that ``pack`` would measure by encoding (objects, lists, long strings).

    Compact JSON writes an object as ``{"key":<its value's JSON>,...}``, so the
    object's blob is its values' blobs joined: one encoding yields both, for a
    caller that packs the values on their own next. Runs of other values
    (numbers, short strings ...) are encoded together, in one call each.
    """
    pieces: list[bytes] = []  # joined once: a large part is copied once more, not thrice
    parts: list[tuple[Any, bytes]] = []
    run: dict[str, Any] = {}
    for key, item in value.items():
        kind = type(item)
        if kind is dict or kind is list or (kind is str and len(item) > _LONG_STRING):
            if run:
                pieces += (encode(run)[1:-1], b",")  # '"a":1,"b":2' without the braces
                run = {}
            part = encode(item)
            parts.append((item, part))
            pieces += (encode(key), b":", part, b",")
        else:
            run[key] = item
    if run:
        pieces.append(encode(run)[1:-1])
    elif pieces:
        pieces.pop()  # the last comma
    return b"".join((b"{", *pieces, b"}")), parts


#: Strings longer than this are encoded on their own by ``encode_object``.
_LONG_STRING = 1024


def blob_key(blob: bytes) -> str:
    """The content address of ``blob``: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def check_key(key: Any) -> str:
    """``key`` if it is a well-formed blob key, else ``ValueError`` naming it."""
    if not isinstance(key, str) or not _KEY.match(key):
        raise ValueError(f"{key!r} is not a payload key (expected sha256:<64 hex digits>)")
    return key


def make_ref(blob: bytes, key: str | None = None) -> dict[str, Any]:
    """The reference to ``blob`` (see the module docstring); ``key``, when the
    caller just computed or checked ``blob_key(blob)``, saves hashing it again."""
    text = blob[:PREVIEW_CHARS].decode("utf-8", errors="ignore")
    return {REF_KEY: blob_key(blob) if key is None else key, "size": len(blob),
            "preview": text}


def is_ref(value: Any) -> bool:
    """True when ``value`` has exactly the shape of a reference."""
    return (type(value) is dict and len(value) == 3 and value.keys() == _REF_FIELDS
            and isinstance(value[REF_KEY], str) and _KEY.match(value[REF_KEY]) is not None
            and type(value["size"]) is int and isinstance(value["preview"], str))


def needs_escape(value: Any) -> bool:
    """A user object that carries ``$runfox_ref`` without being a reference."""
    return type(value) is dict and REF_KEY in value and not is_ref(value)


def describe(value: Any) -> str | None:
    """``5.2 MB offloaded (sha256:9f2c1d0e4a7b...): {"rows":[...`` for a reference
    (size, the start of its key, preview); ``None`` for any other value."""
    if not is_ref(value):
        return None
    return f"{_size_text(value['size'])} offloaded ({value[REF_KEY][:19]}...): " \
           f"{value['preview']}{'...' if value['size'] > len(value['preview']) else ''}"


def _size_text(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def pack(value: Any, threshold: int | None, put: Put, encoder: Encode = encode) -> Any:
    """``value``, or a reference to it when its JSON is over ``threshold`` bytes.

    ``threshold`` ``None`` offloads only values that need escaping (see the
    module docstring). A reference is returned as it is. ``put`` is called with
    the blob (and its key) before the reference is returned; ``encoder`` makes
    the blob.
    """
    return pack_encoded(value, threshold, put, encoder)[0]


def pack_encoded(value: Any, threshold: int | None, put: Put, encoder: Encode = encode
                 ) -> tuple[Any, bytes | None]:
    """``pack``, and the blob of what it returns when measuring it made one.

    A value that stays inline had to be encoded to learn its size; that text
    is what a store writes for it, so it is handed back instead of being made
    again. ``None`` when nothing was encoded (numbers, short strings, no
    threshold) or a reference is returned.
    """
    if value is None or isinstance(value, bool | int | float) or is_ref(value):
        return value, None
    escape = needs_escape(value)
    if not escape:
        if threshold is None:
            return value, None
        if isinstance(value, str) and len(value) * 6 + 2 <= threshold:
            return value, None  # a short string cannot be over the threshold: not encoded
    blob = encoder(value)
    if not escape and threshold is not None and len(blob) <= threshold:
        return value, blob
    ref = make_ref(blob)
    put(ref[REF_KEY], blob)
    return ref, None


def pack_object(value: Any, threshold: int | None, put: Put, encoder: Encode = encode) -> Any:
    """A step output (or a result output on a queue) packed per top-level key.

    An object whose JSON is within ``threshold`` is returned as it is. One over
    it stays an object: its largest values (objects, lists, long strings) become
    references, largest first, until the rest is within the threshold, and each
    is stored as a blob of its own, so the state key the value lands in is the
    same blob. A value is only replaced when its reference is shorter than it.
    When that cannot bring the object within the threshold (many small keys),
    the whole object becomes one reference, as ``pack`` makes. Values that need
    escaping (see the module docstring) are replaced whatever their size, and
    so are none others when ``threshold`` is ``None``. Values that are
    references already stay so. Anything but an object is ``pack``-ed whole.

    ``put`` is called only for the blobs the returned value refers to.
    """
    if type(value) is not dict or is_ref(value) or needs_escape(value):
        return pack(value, threshold, put, encoder)
    escapes = [key for key, item in value.items() if needs_escape(item)]
    if threshold is None and not escapes:
        return value
    # Measure the object's JSON without joining it: the large values one by one
    # (their blobs are what gets stored), the others together.
    parts: list[tuple[str, bytes]] = []
    rest: dict[str, Any] = {}
    size = 2  # the braces
    for key, item in value.items():
        kind = type(item)
        if ((kind is dict and not is_ref(item)) or kind is list
                or (kind is str and len(item) > _LONG_STRING)):
            part = encoder(item)
            parts.append((key, part))
            size += len(encode(key)) + 1 + len(part) + 1  # "key":part,
        else:
            rest[key] = item
    if rest:
        size += len(encode(rest)) - 2 + 1  # '"a":1,"b":2' and its comma
    if value:
        size -= 1  # no comma after the last
    if not escapes and (threshold is None or size <= threshold):
        return value
    out = dict(value)
    chosen: list[tuple[str, bytes]] = []
    for key, part in sorted(parts, key=lambda found: len(found[1]), reverse=True):
        forced = key in escapes
        if not forced and (threshold is None or size <= threshold):
            continue
        ref = make_ref(part)
        saved = len(part) - len(encode(ref))
        if forced or saved > 0:
            out[key] = ref
            chosen.append((ref[REF_KEY], part))
            size -= saved
    if threshold is not None and size > threshold:
        return pack(value, threshold, put, encoder)  # over whatever is replaced: whole
    for key, part in chosen:
        put(key, part)
    return out


def unpack_object(value: Any, get: Get) -> Any:
    """What ``pack_object`` (or ``pack``) made, as values: a reference is replaced
    by its value, then references among an object's top-level values by theirs.

    Raises:
        PayloadMissing: a blob is not in the store.
    """
    value = unpack(value, get)
    if not _refs_among(value):
        return value
    return {key: get(item[REF_KEY]) if is_ref(item) else item for key, item in value.items()}


def holds_ref(value: Any) -> bool:
    """True for a reference, or an object with a reference among its top-level values."""
    return is_ref(value) or _refs_among(value)


def _refs_among(value: Any) -> bool:
    """An object with a reference among its top-level values (``pack_object``'s shape)."""
    return type(value) is dict and any(is_ref(item) for item in value.values())


def unpack(value: Any, get: Get) -> Any:
    """The value a reference stands for (``get``), or ``value`` itself.

    Raises:
        PayloadMissing: the blob is not in the store.
    """
    return get(value[REF_KEY]) if is_ref(value) else value


# -- whole records -----------------------------------------------------------------------

#: ``pack_value(value) -> value``: ``pack`` bound to a store and a threshold.
PackValue = Callable[[Any], Any]


def pack_record(record: WorkflowRecord, previous: WorkflowRecord | None,
                pack_value: PackValue, pack_output: PackValue | None = None
                ) -> WorkflowRecord:
    """``record`` with its large values replaced by references, for a store to encode.

    Only the steps changed since ``previous`` (the record as loaded, or ``None``
    for all) are looked at, so the cost follows what the write changes. The
    result shares everything it did not change with ``record`` (identity is
    kept, so a store's ``changed_since`` sees the same steps change); it is
    for encoding only: keep and hand out ``record`` itself. Step outputs and
    inputs go through ``pack_output`` (``pack_object`` bound like ``pack_value``;
    without it, ``pack_value``).
    """
    pack_output = pack_value if pack_output is None else pack_output
    changed = (record.steps.changed_since(previous.steps) if previous is not None
               else list(record.steps))
    replaced: dict[str, StepRecord] = {}
    for step_id in changed:
        step = record.steps[step_id]
        output = pack_output(step.output) if step.output is not None else None
        inputs = pack_output(step.inputs) if step.inputs is not None else None
        if output is not step.output or inputs is not step.inputs:
            replaced[step_id] = step.evolve(output=output, inputs=inputs)
    changes: dict[str, Any] = {}
    if replaced:
        changes["steps"] = record.steps.replace(replaced)
    if previous is None or record.inputs is not previous.inputs:
        inputs = pack_value(record.inputs)
        if inputs is not record.inputs:
            changes["inputs"] = inputs
    state = _map_values(record.state, pack_value)
    if state is not record.state:
        changes["state"] = state
    outcome = pack_value(record.outcome)
    if outcome is not record.outcome:
        changes["outcome"] = outcome
    return record.evolve(**changes) if changes else record


def unpack_record(record: WorkflowRecord, base: WorkflowRecord | None, get: Get
                  ) -> WorkflowRecord:
    """``record`` with references replaced by their values, as a store loaded it.

    ``base`` is a record of the same execution this one was built from (steps
    that are the same objects in both are taken as already unpacked), or
    ``None``. A step's output or inputs may be a reference (records of schema
    10 and before, or an object of many small keys) or an object holding
    references among its top-level values (``pack_object``); both are resolved. A
    reference whose blob is missing stays in place and becomes a ``Defect``
    naming the field and the key (``steps.<id>.output.<key>`` for a value of an
    output, ``steps.<id>.inputs.<key>`` of inputs), so the record still loads and
    the Backend fails the execution on its next transition with everything kept.
    """
    defects: list[Defect] = []

    def resolve(value: Any, where: str, step: str | None = None) -> Any:
        if not is_ref(value):
            return value
        try:
            return get(value[REF_KEY])
        except PayloadMissing as exc:
            defects.append(Defect(where, f"payload {value[REF_KEY]} is missing ({exc.reason}); "
                                         "the reference is kept", value, step))
            return value

    def resolve_object(value: Any, where: str, step: str, listed: bool = False) -> Any:
        """A step's output or inputs: whole (an older record), then per top-level key."""
        value = _as_object(resolve(value, where, step), value, listed)
        if not _refs_among(value):
            return value
        return {k: resolve(v, f"{where}.{k}", step) for k, v in value.items()}

    changed = (record.steps.changed_since(base.steps) if base is not None
               else list(record.steps))
    replaced: dict[str, StepRecord] = {}
    for step_id in changed:
        step = record.steps[step_id]
        if not (holds_ref(step.output) or holds_ref(step.inputs)):
            continue
        before = len(defects)
        spec = record.plan.by_id.get(step_id)
        listed = spec is not None and spec.map is not None  # a map step's output is a list
        output = resolve_object(step.output, f"steps.{step_id}.output", step_id, listed)
        inputs = resolve_object(step.inputs, f"steps.{step_id}.inputs", step_id)
        found = tuple(defects[before:])
        replaced[step_id] = step.evolve(output=output, inputs=inputs,
                                        defects=step.defects + found)
    changes: dict[str, Any] = {}
    if replaced:
        changes["steps"] = record.steps.replace(replaced)
    inputs = resolve(record.inputs, "inputs")
    if inputs is not record.inputs:
        changes["inputs"] = _as_object(inputs, record.inputs)
    if any(is_ref(v) for v in record.state.values()):
        changes["state"] = {k: resolve(v, f"state.{k}") for k, v in record.state.items()}
    outcome = resolve(record.outcome, "outcome")
    if outcome is not record.outcome:
        changes["outcome"] = outcome
    if not changes and not defects:
        return record
    if defects:
        changes["defects"] = record.defects + tuple(defects)
    return record.evolve(**changes)


def _as_object(value: Any, ref: Any, listed: bool = False) -> Any:
    """A step's output and inputs must be objects (a map step's output a list of
    them, when ``listed``): a blob that is neither is corrupt."""
    if value is ref or isinstance(value, dict) or (listed and isinstance(value, list)):
        return value
    expected = "an object or a list" if listed else "an object"
    raise CorruptRecord(ref[REF_KEY], f"the payload is a {type(value).__name__}, "
                                      f"where {expected} was stored")


def _map_values(mapping: Mapping[str, Any], fn: PackValue) -> Any:
    """``mapping`` with ``fn`` applied to each value; the same object if nothing changed."""
    out: dict[str, Any] | None = None
    for key, value in mapping.items():
        new = fn(value)
        if new is not value:
            if out is None:
                out = dict(mapping)
            out[key] = new
    return mapping if out is None else out
