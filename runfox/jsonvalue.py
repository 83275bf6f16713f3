"""Validation and copying of JSON values.

Everything runfox stores (workflow inputs, step outputs, state, outcomes) must be
plain JSON so that every store and queue can hold it and every reader gets the
same thing back. ``json_copy`` checks a value and returns an isolated copy in one
pass; the error names the offending path. ``as_output`` applies that to what an
executor returned, which the worker harness and the graph both need.
A result a runner decoded from JSON text it wrote (``Decoded``, made by
``decoded``) is runfox's own and already of JSON types: ``as_output`` checks it
without copying it deeply, so its values keep their identity (the payload
offloader recognises a value it stored by identity, and is spared encoding and
hashing it again).
``compact_json`` is the one text form stores write (rows, blobs): compact and
ASCII-only, so every encoding of a value is byte-for-byte the same and payload
keys (hashes of that text) agree between writers.

Values nested deeper than ``runfox.limits`` allows (``depth``, 100 by default)
are refused too: a structure thousands of levels deep would otherwise end in a
``RecursionError`` here or in whatever reads it next.
"""

from __future__ import annotations

import json
import math
from typing import Any

from . import limits
from .errors import NotJSONError

__all__ = ["Decoded", "as_output", "compact_json", "decoded", "error_output", "json_clone",
           "json_copy", "too_deep"]

# One encoder for every call: ``json.dumps`` with options builds a new one each time.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def compact_json(value: Any) -> str:
    """``value`` as compact, ASCII-only JSON (``\\uXXXX`` escapes), NaN refused.

    ASCII, so any column or server character set holds it unchanged; one form,
    so the same value always gives the same text (and blob key).
    """
    return _ENCODER.encode(value)


class Decoded(dict[str, Any]):
    """A step output a runner decoded from the JSON text of a result (``decoded``).

    Everywhere it is a dict. The mark says two things the graph may rely on: its
    values are of the exact types a JSON decoder makes, and they belong to
    runfox (fresh from a decoder, or the payload offloader's cached values,
    which nobody changes), not to a caller who may still change them. So
    ``as_output`` checks it in place, for the depth limit and finite numbers
    (a decoder accepts ``NaN`` and any depth), and copies only its top level.

    Only runners make one, in ``gather``: an output an executor returned must
    be copied deeply, since the executor's caller may keep and change it.
    ``json_copy`` and ``json_clone`` turn one into a plain dict.
    """

    __slots__ = ()


def decoded(value: Any) -> Any:
    """``value``, a result output a runner just decoded from JSON, marked as
    ``Decoded`` when it is an object (anything else is returned as is)."""
    return Decoded(value) if type(value) is dict else value


def json_copy(value: Any, path: str = "$", *, max_depth: int | None = None) -> Any:
    """Return a deep copy of ``value``; ``NotJSONError`` if it is not strict JSON.

    Tuples are accepted and become lists. Non-string keys, NaN, infinities and any
    other type are refused, and so are containers nested more than ``max_depth``
    levels deep (default: ``runfox.limits.current().depth``; ``{"a": 1}`` is one
    level). The error names the path where the limit was reached.
    """
    if max_depth is None:
        max_depth = limits.current().depth
    try:
        return _plain_copy(value, max_depth)
    except _NotPlain:
        # A subclass to convert, or an error to name by its path: the full walk.
        return _copy(value, path, max_depth, max_depth)


class _NotPlain(Exception):
    """``_plain_copy`` met something only ``_copy`` can handle or explain."""


_PLAIN = frozenset({str, int, bool, type(None)})


def _plain_copy(value: Any, room: int) -> Any:
    """``_copy`` for values made only of the exact JSON types (what executors and
    stores produce), without building the path of every item: about twice as fast
    on a large output. Anything else raises ``_NotPlain`` and ``_copy`` decides."""
    t = type(value)
    if t is dict or t is Decoded:
        if room <= 0:
            raise _NotPlain
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _NotPlain
            out[key] = item if type(item) in _PLAIN else _plain_copy(item, room - 1)
        return out
    if t is list or t is tuple:
        if room <= 0:
            raise _NotPlain
        return [item if type(item) in _PLAIN else _plain_copy(item, room - 1)
                for item in value]
    if t in _PLAIN or (t is float and math.isfinite(value)):
        return value
    raise _NotPlain


def _copy(value: Any, path: str, room: int, limit: int) -> Any:
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return value
    if t is float:
        if not math.isfinite(value):
            raise NotJSONError(f"{value!r} is not a finite number", path)
        return value
    if t is dict or t is list or t is tuple or t is Decoded:
        if room <= 0:
            raise NotJSONError(too_deep(limit), path)
        if t is not list and t is not tuple:
            out = {}
            for key, item in value.items():
                if type(key) is not str:
                    raise NotJSONError(f"key {key!r} is a {type(key).__name__}, not a string",
                                       path)
                out[key] = _copy(item, f"{path}.{key}", room - 1, limit)
            return out
        return [_copy(item, f"{path}[{i}]", room - 1, limit) for i, item in enumerate(value)]
    # Subclasses (StrEnum, IntEnum, numpy.float64) are stored as their plain base type.
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, float):
        return _copy(float(value), path, room, limit)
    raise NotJSONError(f"a {t.__name__} is not a JSON value", path)


def _strict(value: Any, room: int) -> bool:
    """Whether ``value`` is what ``json_copy`` would copy unchanged: only the types
    a JSON decoder makes (dict with string keys, list, str, int, float, bool,
    None; keys are not looked at, a decoder makes only strings), no NaN or
    infinity, nothing nested more than ``room`` levels deep. Walks the
    containers without copying them: about a third of the copy's time."""
    t = type(value)
    if t is list:
        items: Any = value
    elif t is dict or t is Decoded:
        items = value.values()
    else:
        return t in _PLAIN or (t is float and math.isfinite(value))
    if room <= 0:
        return False
    for item in items:
        t = type(item)
        if t is dict or t is list:
            if not _strict(item, room - 1):
                return False
        elif t is float:
            if not math.isfinite(item):
                return False
        elif t not in _PLAIN:
            return False  # not from a decoder after all: the full copy decides
    return True


def json_clone(value: Any) -> Any:
    """A deep copy of ``value``, a JSON value already checked (by ``json_copy``).

    The fast copy behind isolated record loads: dicts and lists are rebuilt,
    everything else is immutable and shared. It checks nothing.
    """
    t = type(value)
    if t is dict or t is Decoded:
        return {key: item if type(item) in _ATOMS else json_clone(item)
                for key, item in value.items()}
    if t is list:
        return [item if type(item) in _ATOMS else json_clone(item) for item in value]
    return value


_ATOMS = frozenset({str, int, float, bool, type(None)})


def too_deep(limit: int) -> str:
    """The message for a value nested deeper than ``limit`` levels."""
    return (f"nested more than {limit} levels deep (the depth limit, "
            "RUNFOX_LIMIT_DEPTH or runfox.limits.configure(depth=...))")


def error_output(kind: str, message: str, tb: str | None = None) -> dict[str, Any]:
    """The output of a failed attempt, in the seed's executor pattern.

    ``{"ok": False, "error": message, "error_type": kind}``, plus ``"traceback"``
    when there is one: the message is the string ``error`` that branch conditions
    written against the seed read (``{"var": "error"}``), with the type beside it.
    """
    output: dict[str, Any] = {"ok": False, "error": message, "error_type": kind}
    if tb:
        output["traceback"] = tb
    return output


def as_output(value: Any, fn: str | None = None) -> dict[str, Any]:
    """``value`` as a step output: a JSON copy of a dict, else an ``InvalidOutput`` error.

    A ``Decoded`` output (a runner's gathered result) is checked in place and
    copied at its top level only: the values are shared with it. It fails
    exactly as a plain dict with the same content would (same message, same
    path), since that case takes the full copy to name the place.
    """
    of_fn = f" for fn {fn!r}" if fn else ""
    if type(value) is Decoded and _strict(value, limits.current().depth):
        return dict(value)
    if not isinstance(value, dict):
        return error_output("InvalidOutput", f"the executor returned {type(value).__name__}"
                                             f"{of_fn}, expected a dict")
    try:
        return json_copy(value)
    except NotJSONError as exc:
        return error_output("InvalidOutput", f"the output{of_fn} is not JSON: {exc}")
