"""JSON Logic, compiled once into Python closures.

Inputs, branch conditions, ``set`` targets and outputs in a workflow spec are JSON
Logic rules (https://jsonlogic.com) plus runfox's ``vars`` operator, which returns
every match of a JSONPath as a list. Rules are compiled once per spec into nested
closures, so evaluating one is a handful of Python calls with no parsing.

Semantics follow the reference implementation (json-logic-js), which is what the
official test suite checks: JavaScript's loose ``==`` and relational coercions,
``[]`` is falsy, ``if``/``and``/``or``/``?:`` evaluate lazily, rules nested in
arrays are evaluated, falsy data (``0``, ``""``, ``False``) is kept as it is. Two
deliberate departures: division or remainder by zero raises ``ExpressionError``
instead of yielding ``Infinity``/``NaN`` (which JSON cannot store), and ``min``/
``max`` of nothing is ``null``.

``vars`` paths are parsed by jsonpath-ng (the JSONPath engine json-logic-path uses)
once, at compile time; a path that does not parse is an ``ExpressionError``, never a
silent empty list.

A small rule must not cost a large amount of work, so ``runfox.limits`` bounds what
evaluation may build, each overrun an ``ExpressionError`` naming the operator and
the limit: rules nest at most ``depth`` levels; ``cat`` and array-to-string
conversions make strings of at most ``string_length`` characters; ``merge`` and
``map`` make lists of at most ``list_length`` items, and a ``reduce`` accumulator
holds at most that many JSON values (shared parts counted every time they appear,
as storing it would); numbers read from strings, and integers computed by ``+``,
``-`` and ``*``, have at most ``number_digits`` digits. Number parsing is linear
in the length of the string.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping
from functools import lru_cache
from typing import Any

from . import limits
from .errors import ExpressionError

__all__ = [
    "OPERATORS",
    "Compiled",
    "LazyMapping",
    "compile_rule",
    "compile_template",
    "evaluate",
    "find_refs",
    "is_rule",
    "truthy",
]

logger = logging.getLogger("runfox.expressions")

Compiled = Callable[[Any], Any]
_MISSING: Any = object()
#: How much of a value an error message shows.
_SHOWN = 200


class LazyMapping(Mapping[str, Any]):
    """A read-only mapping built on demand; ``vars`` asks for a plain copy."""

    def materialize(self) -> dict[str, Any]:
        return {k: self[k] for k in self}


# ---------------------------------------------------------------------------
# JavaScript value semantics
# ---------------------------------------------------------------------------


def truthy(value: Any) -> bool:
    """JSON Logic truthiness: like JavaScript, except that ``[]`` is falsy."""
    if value is None or value is False:
        return False
    if value is True:
        return True
    t = type(value)
    if t is int:
        return value != 0
    if t is float:
        return value != 0 and value == value  # NaN is falsy
    if t is str or t is list:
        return len(value) > 0
    return True  # objects, including {}, are truthy in JavaScript


def _js_type(value: Any) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return "boolean"
    t = type(value)
    if t is int or t is float:
        return "number"
    if t is str:
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    return "object"


def _js_str(value: Any) -> str:
    """JavaScript's String(value) for JSON values (arrays join with commas)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    t = type(value)
    if t is str:
        return value
    if t is int:
        return str(value)
    if t is float:
        if value != value:
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    if isinstance(value, list | tuple):
        return _join_array(value)
    return "[object Object]"


def _join_array(value: list[Any] | tuple[Any, ...]) -> str:
    """String(array), refused as soon as it grows past the string limit."""
    limit = limits.current().string_length
    parts = []
    total = -1
    for item in value:
        text = "" if item is None else _js_str(item)
        total += len(text) + 1
        if total > limit:
            raise ExpressionError(_too_long("array to string", total, limit))
        parts.append(text)
    return ",".join(parts)


def _too_deep() -> str:
    return (f"nested more than {limits.current().depth} levels deep, over the depth limit "
            "(RUNFOX_LIMIT_DEPTH)")


def _brief(values: Any) -> str:
    text = repr(list(values))
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}... ({len(text):,} characters)"


def _too_long(op: str, size: int, limit: int) -> str:
    return (f"{op}: the string would be {size:,} characters or more, over the limit of {limit:,} "
            "(RUNFOX_LIMIT_STRING_LENGTH)")


def _too_many(op: str, size: int, limit: int, what: str = "items") -> str:
    return (f"{op}: the result would hold {size:,} {what}, over the limit of {limit:,} "
            "(RUNFOX_LIMIT_LIST_LENGTH)")


def _check_digits(op: str, text: str) -> None:
    limit = limits.current().number_digits
    if len(text) > limit:
        raise ExpressionError(f"{op}: a number of {len(text):,} characters, over the limit of "
                              f"{limit:,} digits (RUNFOX_LIMIT_NUMBER_DIGITS)")


def _check_int(op: str, value: float | int) -> float | int:
    """``value``, unless it is an integer with more digits than the limit allows."""
    if type(value) is int:
        limit = limits.current().number_digits
        if value.bit_length() > limit * 3.33:  # log2(10) = 3.32...
            raise ExpressionError(f"{op}: the result has over {limit:,} digits, over the limit "
                                  "(RUNFOX_LIMIT_NUMBER_DIGITS)")
    return value


def _to_primitive(value: Any) -> Any:
    if isinstance(value, list | tuple | Mapping):
        return _js_str(value)
    return value


# Unambiguous (``\d+(?:\.\d*)?``, not ``\d+\.?\d*``), so a failed match backtracks in
# linear time: the old form took seconds on 16,000 digits followed by a letter.
_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def _to_number(value: Any) -> float | int:
    """JavaScript's Number(value)."""
    t = type(value)
    if t is int or t is float:
        return value
    if value is True:
        return 1
    if value is False or value is None:
        return 0
    if t is str:
        s = value.strip()
        if not s:
            return 0
        if _NUMBER_RE.fullmatch(s):
            _check_digits("number", s)
            try:
                return int(s)
            except ValueError:
                return float(s)
        if s in ("Infinity", "+Infinity"):
            return math.inf
        if s == "-Infinity":
            return -math.inf
        return math.nan
    if isinstance(value, list | tuple):
        return _to_number(_js_str(value))
    return math.nan


_PREFIX_RE = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)")


def _parse_float(value: Any) -> float | int:
    """JavaScript's parseFloat(value): the longest numeric prefix of String(value)."""
    t = type(value)
    if t is int or t is float:
        return value
    match = _PREFIX_RE.match(_js_str(value))
    if not match:
        return math.nan
    text = match.group(1)
    _check_digits("number", text)
    try:
        return int(text)
    except ValueError:
        return float(text)


def _loose_eq(a: Any, b: Any) -> bool:
    """JavaScript's ``==`` restricted to JSON values."""
    ta, tb = _js_type(a), _js_type(b)
    if ta == tb:
        if ta in ("array", "object"):
            return a is b
        return bool(a == b)
    if ta == "null" or tb == "null":
        return False
    if ta == "boolean":
        return _loose_eq(1 if a else 0, b)
    if tb == "boolean":
        return _loose_eq(a, 1 if b else 0)
    if ta == "number" and tb == "string":
        return bool(a == _to_number(b))
    if ta == "string" and tb == "number":
        return bool(_to_number(a) == b)
    if ta in ("array", "object"):
        return _loose_eq(_to_primitive(a), b)
    if tb in ("array", "object"):
        return _loose_eq(a, _to_primitive(b))
    return False


def _strict_eq(a: Any, b: Any) -> bool:
    ta = _js_type(a)
    if ta != _js_type(b):
        return False
    if ta in ("array", "object"):
        return a is b
    return bool(a == b)


def _lt(a: Any, b: Any) -> bool:
    a, b = _to_primitive(a), _to_primitive(b)
    if type(a) is str and type(b) is str:
        return a < b
    return bool(_to_number(a) < _to_number(b))


def _le(a: Any, b: Any) -> bool:
    a, b = _to_primitive(a), _to_primitive(b)
    if type(a) is str and type(b) is str:
        return a <= b
    return bool(_to_number(a) <= _to_number(b))



# ---------------------------------------------------------------------------
# Operators evaluated on already-evaluated arguments
# ---------------------------------------------------------------------------


def _op_lt(*args: Any) -> bool:
    if len(args) == 3:
        return _lt(args[0], args[1]) and _lt(args[1], args[2])
    return _lt(args[0], args[1])


def _op_le(*args: Any) -> bool:
    if len(args) == 3:
        return _le(args[0], args[1]) and _le(args[1], args[2])
    return _le(args[0], args[1])


def _op_plus(*args: Any) -> float | int:
    total: float | int = 0
    for arg in args:
        total += _parse_float(arg)
    return _check_int("'+'", total)


def _op_times(*args: Any) -> float | int:
    if not args:
        return math.nan
    product: float | int = _parse_float(args[0])
    for arg in args[1:]:
        product = _check_int("'*'", product * _parse_float(arg))
    return product


def _op_minus(a: Any = None, *rest: Any) -> float | int:
    if not rest:
        return -_to_number(a)
    return _check_int("'-'", _to_number(a) - _to_number(rest[0]))


def _op_divide(a: Any, b: Any = None) -> float | int:
    x, y = _to_number(a), _to_number(b)
    if y == 0:
        raise ExpressionError(f"division by zero in {{'/': [{a!r}, {b!r}]}}")
    return x / y


def _op_modulo(a: Any, b: Any) -> float | int:
    x, y = _to_number(a), _to_number(b)
    if y == 0:
        raise ExpressionError(f"remainder by zero in {{'%': [{a!r}, {b!r}]}}")
    result = math.fmod(x, y)
    if type(x) is int and type(y) is int:
        return int(result)
    return result


def _op_min(*args: Any) -> Any:
    if not args:
        return None
    numbers = [_to_number(a) for a in args]
    return math.nan if any(n != n for n in numbers) else min(numbers)


def _op_max(*args: Any) -> Any:
    if not args:
        return None
    numbers = [_to_number(a) for a in args]
    return math.nan if any(n != n for n in numbers) else max(numbers)


def _op_in(a: Any, b: Any = None) -> bool:
    if isinstance(b, str):
        return _js_str(a) in b
    if isinstance(b, list | tuple):
        return any(_strict_eq(a, item) for item in b)
    return False


def _op_cat(*args: Any) -> str:
    parts = ["" if a is None else _js_str(a) for a in args]
    total = sum(len(p) for p in parts)
    limit = limits.current().string_length
    if total > limit:
        raise ExpressionError(_too_long("cat", total, limit))
    return "".join(parts)


def _op_substr(source: Any, start: Any = 0, length: Any = None) -> str:
    text = _js_str(source)
    begin = int(_to_number(start))
    if begin < 0:
        begin = max(len(text) + begin, 0)
    tail = text[begin:]
    if length is None:
        return tail
    count = int(_to_number(length))
    if count < 0:
        return tail[: max(len(tail) + count, 0)]
    return tail[:count]


def _op_merge(*args: Any) -> list[Any]:
    size = sum(len(a) if isinstance(a, list | tuple) else 1 for a in args)
    limit = limits.current().list_length
    if size > limit:
        raise ExpressionError(_too_many("merge", size, limit))
    merged: list[Any] = []
    for arg in args:
        if isinstance(arg, list | tuple):
            merged.extend(arg)
        else:
            merged.append(arg)
    return merged


def _op_log(value: Any = None, *_: Any) -> Any:
    # DEBUG, not INFO: the value may be an input nobody meant to see in a worker's log.
    logger.debug("%r", value)
    return value


def _op_not(value: Any = None, *_: Any) -> bool:
    return not truthy(value)


def _op_truthy(value: Any = None, *_: Any) -> bool:
    return truthy(value)


_EAGER: dict[str, Callable[..., Any]] = {
    "==": lambda a=None, b=None, *_: _loose_eq(a, b),
    "===": lambda a=None, b=None, *_: _strict_eq(a, b),
    "!=": lambda a=None, b=None, *_: not _loose_eq(a, b),
    "!==": lambda a=None, b=None, *_: not _strict_eq(a, b),
    "<": _op_lt,
    "<=": _op_le,
    ">": lambda a, b, *_: _lt(b, a),
    ">=": lambda a, b, *_: _le(b, a),
    "!": _op_not,
    "!!": _op_truthy,
    "+": _op_plus,
    "-": _op_minus,
    "*": _op_times,
    "/": _op_divide,
    "%": _op_modulo,
    "min": _op_min,
    "max": _op_max,
    "in": _op_in,
    "cat": _op_cat,
    "substr": _op_substr,
    "merge": _op_merge,
    "log": _op_log,
}


# ---------------------------------------------------------------------------
# Data access
# ---------------------------------------------------------------------------


def _split_path(path: Any) -> tuple[str, ...] | None:
    """``None`` means the whole data object."""
    if path is None or path == "" or path == []:
        return None
    return tuple(_js_str(path).split("."))


def _lookup(data: Any, keys: tuple[str, ...]) -> Any:
    current = data
    for key in keys:
        if current is None:
            return _MISSING
        t = type(current)
        if t is dict:
            current = current.get(key, _MISSING)
        elif t is list:
            if not key.isdigit():
                return _MISSING
            index = int(key)
            current = current[index] if index < len(current) else _MISSING
        elif isinstance(current, Mapping):
            current = current.get(key, _MISSING)
        else:
            return _MISSING
        if current is _MISSING:
            return _MISSING
    return current


def _materialize(data: Any) -> Any:
    if isinstance(data, LazyMapping):
        return data.materialize()
    if type(data) is dict and any(isinstance(v, LazyMapping) for v in data.values()):
        return {k: (v.materialize() if isinstance(v, LazyMapping) else v) for k, v in data.items()}
    return data


@lru_cache(maxsize=1024)
def _parse_jsonpath(path: str) -> Any:
    from jsonpath_ng.exceptions import JSONPathError
    from jsonpath_ng.ext import parse

    if not path.strip():
        raise ExpressionError("vars: empty JSONPath")
    try:
        return parse(path)
    except (JSONPathError, Exception) as exc:  # jsonpath-ng raises several types
        raise ExpressionError(f"vars: JSONPath {path!r} does not parse: {exc}") from exc


# ---------------------------------------------------------------------------
# Compiler
# ---------------------------------------------------------------------------


class _Const:
    """A compiled constant: callable like any compiled rule, foldable at compile time."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __call__(self, data: Any) -> Any:
        return self.value


def _compile(rule: Any) -> Compiled:
    if isinstance(rule, list):
        parts = [_compile(item) for item in rule]
        if all(type(p) is _Const for p in parts):
            return _Const([p.value for p in parts])  # type: ignore[attr-defined]
        return lambda data: [part(data) for part in parts]
    if type(rule) is not dict or len(rule) != 1:
        return _Const(rule)
    ((op, args),) = rule.items()
    if not isinstance(args, list):
        args = [args]
    special = _SPECIAL.get(op)
    if special is not None:
        return special(args)
    fn = _EAGER.get(op)
    if fn is None:
        raise ExpressionError(f"unknown JSON Logic operator {op!r}")
    return _eager(op, fn, [_compile(a) for a in args])


def _eager(op: str, fn: Callable[..., Any], parts: list[Compiled]) -> Compiled:
    def guarded(*values: Any) -> Any:
        try:
            return fn(*values)
        except ExpressionError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            raise ExpressionError(f"{op!r} failed on {_brief(values)}: {exc}") from exc
        except RecursionError:
            raise ExpressionError(f"{op!r}: its arguments nest too deeply to evaluate") from None

    if len(parts) == 1:
        (a,) = parts
        return lambda data: guarded(a(data))
    if len(parts) == 2:
        a, b = parts
        return lambda data: guarded(a(data), b(data))
    return lambda data: guarded(*[part(data) for part in parts])


def _c_var(args: list[Any]) -> Compiled:
    if not args:
        return lambda data: data
    path_c = _compile(args[0])
    default_c = _compile(args[1]) if len(args) > 1 else _Const(None)
    if type(path_c) is _Const:
        keys = _split_path(path_c.value)
        if keys is None:
            return lambda data: data

        def var(data: Any) -> Any:
            value = _lookup(data, keys)
            return default_c(data) if value is _MISSING else value

        return var

    def dynamic_var(data: Any) -> Any:
        keys = _split_path(path_c(data))
        if keys is None:
            return data
        value = _lookup(data, keys)
        return default_c(data) if value is _MISSING else value

    return dynamic_var


def _c_vars(args: list[Any]) -> Compiled:
    if not args:
        raise ExpressionError("vars needs a JSONPath")
    path_c = _compile(args[0])
    if type(path_c) is _Const:
        if not isinstance(path_c.value, str):
            raise ExpressionError(f"vars: JSONPath must be a string, got {path_c.value!r}")
        expr = _parse_jsonpath(path_c.value)
        return lambda data: [m.value for m in expr.find(_materialize(data))]

    def dynamic_vars(data: Any) -> list[Any]:
        path = path_c(data)
        if not isinstance(path, str):
            raise ExpressionError(f"vars: JSONPath must be a string, got {path!r}")
        return [m.value for m in _parse_jsonpath(path).find(_materialize(data))]

    return dynamic_vars


def _missing_keys(data: Any, keys: list[Any]) -> list[Any]:
    absent = []
    for key in keys:
        path = _split_path(key)
        value = data if path is None else _lookup(data, path)
        if value is _MISSING or value is None or value == "":
            absent.append(key)
    return absent


def _c_missing(args: list[Any]) -> Compiled:
    parts = [_compile(a) for a in args]

    def missing(data: Any) -> list[Any]:
        values = [p(data) for p in parts]
        keys = values[0] if values and isinstance(values[0], list) else values
        return _missing_keys(data, keys)

    return missing


def _c_missing_some(args: list[Any]) -> Compiled:
    if len(args) != 2:
        raise ExpressionError("missing_some takes [minimum, [keys...]]")
    need_c, keys_c = _compile(args[0]), _compile(args[1])

    def missing_some(data: Any) -> list[Any]:
        keys = keys_c(data)
        keys = keys if isinstance(keys, list) else [keys]
        absent = _missing_keys(data, keys)
        need = _to_number(need_c(data))
        return [] if len(keys) - len(absent) >= need else absent

    return missing_some


def _c_if(args: list[Any]) -> Compiled:
    parts = [_compile(a) for a in args]
    if len(parts) == 3:
        cond, then, other = parts
        return lambda data: then(data) if truthy(cond(data)) else other(data)

    def if_(data: Any) -> Any:
        i = 0
        while i < len(parts) - 1:
            if truthy(parts[i](data)):
                return parts[i + 1](data)
            i += 2
        return parts[i](data) if i == len(parts) - 1 else None

    return if_


def _c_and(args: list[Any]) -> Compiled:
    parts = [_compile(a) for a in args]

    def and_(data: Any) -> Any:
        value = None
        for part in parts:
            value = part(data)
            if not truthy(value):
                return value
        return value

    return and_


def _c_or(args: list[Any]) -> Compiled:
    parts = [_compile(a) for a in args]

    def or_(data: Any) -> Any:
        value = None
        for part in parts:
            value = part(data)
            if truthy(value):
                return value
        return value

    return or_


def _scoped(op: str, args: list[Any]) -> tuple[Compiled, Compiled]:
    if len(args) < 2:
        raise ExpressionError(f"{op} takes [array, logic]")
    return _compile(args[0]), _compile(args[1])


def _c_map(args: list[Any]) -> Compiled:
    items_c, logic = _scoped("map", args)

    def map_(data: Any) -> list[Any]:
        items = items_c(data)
        if not isinstance(items, list):
            return []
        limit = limits.current().list_length
        if len(items) > limit:
            raise ExpressionError(_too_many("map", len(items), limit))
        return [logic(item) for item in items]

    return map_


def _c_filter(args: list[Any]) -> Compiled:
    items_c, logic = _scoped("filter", args)

    def filter_(data: Any) -> list[Any]:
        items = items_c(data)
        if not isinstance(items, list):
            return []
        return [item for item in items if truthy(logic(item))]

    return filter_


def _c_reduce(args: list[Any]) -> Compiled:
    items_c, logic = _scoped("reduce", args)
    initial_c = _compile(args[2]) if len(args) > 2 else _Const(None)

    def reduce_(data: Any) -> Any:
        items = items_c(data)
        accumulator = initial_c(data)
        if not isinstance(items, list):
            return accumulator
        limit = limits.current()
        sizes: dict[int, tuple[Any, int, int]] = {}
        for item in items:
            accumulator = logic({"current": item, "accumulator": accumulator})
            size, _ = _size(accumulator, sizes, limit.depth)
            if size > limit.list_length:
                raise ExpressionError(_too_many("reduce", size, limit.list_length,
                                                "JSON values in its accumulator"))
        return accumulator

    return reduce_


def _size(value: Any, memo: dict[int, tuple[Any, int, int]], room: int) -> tuple[int, int]:
    """``(values, levels)``: how many JSON values ``value`` holds, a shared part
    counted each time it appears, and how deeply its containers nest.

    Memoised by identity (``memo`` keeps the objects alive so ids stay unique), so
    an accumulator that doubles by reference on every step costs one step each.
    ``room`` is how many levels may still nest here.
    """
    t = type(value)
    if t is not list and t is not dict:
        return 1, 0
    known = memo.get(id(value))
    if known is None:
        if room <= 0:
            raise ExpressionError(f"reduce: the accumulator is {_too_deep()}")
        total, levels = 1, 0
        for item in (value if t is list else value.values()):
            size, depth = _size(item, memo, room - 1)
            total += size
            levels = max(levels, depth)
        known = memo[id(value)] = (value, total, levels + 1)
    if known[2] > room:
        raise ExpressionError(f"reduce: the accumulator is {_too_deep()}")
    return known[1], known[2]


def _c_all(args: list[Any]) -> Compiled:
    items_c, logic = _scoped("all", args)

    def all_(data: Any) -> bool:
        items = items_c(data)
        if not isinstance(items, list) or not items:
            return False
        return all(truthy(logic(item)) for item in items)

    return all_


def _c_some(args: list[Any]) -> Compiled:
    items_c, logic = _scoped("some", args)

    def some_(data: Any) -> bool:
        items = items_c(data)
        return isinstance(items, list) and any(truthy(logic(item)) for item in items)

    return some_


def _c_none(args: list[Any]) -> Compiled:
    items_c, logic = _scoped("none", args)

    def none_(data: Any) -> bool:
        items = items_c(data)
        return not (isinstance(items, list) and any(truthy(logic(item)) for item in items))

    return none_


_SPECIAL: dict[str, Callable[[list[Any]], Compiled]] = {
    "var": _c_var,
    "vars": _c_vars,
    "missing": _c_missing,
    "missing_some": _c_missing_some,
    "if": _c_if,
    "?:": _c_if,
    "and": _c_and,
    "or": _c_or,
    "map": _c_map,
    "filter": _c_filter,
    "reduce": _c_reduce,
    "all": _c_all,
    "some": _c_some,
    "none": _c_none,
}

#: Every operator runfox understands: the official JSON Logic set plus ``vars``.
OPERATORS: frozenset[str] = frozenset(_EAGER) | frozenset(_SPECIAL)
_SCOPED = frozenset({"map", "filter", "reduce", "all", "some", "none"})


# ---------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------


def _check_depth(rule: Any) -> None:
    """Refuse a rule nested deeper than the limit before anything recurses into it."""
    limit = limits.current().depth
    stack: list[tuple[Any, int]] = [(rule, 0)]
    while stack:
        value, level = stack.pop()
        if type(value) is dict:
            children: Any = value.values()
        elif isinstance(value, list | tuple):
            children = value
        else:
            continue
        if level >= limit:
            raise ExpressionError(f"the rule is {_too_deep()}")
        stack.extend((child, level + 1) for child in children)


def _contained(compiled: Compiled) -> Compiled:
    """``compiled``, with a ``RecursionError`` (from data nested too deeply) made an
    ``ExpressionError``."""
    if type(compiled) is _Const:
        return compiled

    def evaluate(data: Any) -> Any:
        try:
            return compiled(data)
        except RecursionError:
            raise ExpressionError("the data nests too deeply to evaluate this rule") from None

    return evaluate


def is_rule(value: Any) -> bool:
    """True for a dict with exactly one key that names an operator."""
    return type(value) is dict and len(value) == 1 and next(iter(value)) in OPERATORS


def compile_rule(rule: Any) -> Compiled:
    """Compile a JSON Logic rule into a function of the data.

    Raises ``ExpressionError`` for an unknown operator, a JSONPath that does not
    parse or a rule nested deeper than ``runfox.limits`` allows. The compiled
    function raises ``ExpressionError`` when evaluation fails or exceeds a limit.
    """
    _check_depth(rule)
    return _contained(_compile(rule))


def compile_template(value: Any) -> Compiled:
    """Compile a value that may contain rules anywhere inside it.

    A dict that is a rule (one key, an operator) is compiled as a rule; any other
    dict or list is a container whose members are compiled the same way; everything
    else is a literal. This is how step ``input`` and workflow ``outputs`` resolve.
    """
    _check_depth(value)
    return _contained(_template(value))


def _template(value: Any) -> Compiled:
    if is_rule(value):
        return _compile(value)
    if type(value) is dict:
        items = [(k, _template(v)) for k, v in value.items()]
        if all(type(c) is _Const for _, c in items):
            return _Const(value)
        return lambda data: {k: c(data) for k, c in items}
    if isinstance(value, list):
        parts = [_template(v) for v in value]
        if all(type(p) is _Const for p in parts):
            return _Const(value)
        return lambda data: [p(data) for p in parts]
    return _Const(value)


@lru_cache(maxsize=512)
def _compile_cached(key: str) -> Compiled:
    return compile_rule(json.loads(key))


def evaluate(rule: Any, data: Any = None) -> Any:
    """Evaluate a JSON Logic rule against ``data`` (``None`` means ``{}``).

    Compiled rules are cached, so evaluating the same rule again is cheap.
    """
    if data is None:
        data = {}
    _check_depth(rule)
    try:
        key = json.dumps(rule, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return compile_rule(rule)(data)
    return _compile_cached(key)(data)


def find_refs(rule: Any, *, template: bool = False) -> Iterator[tuple[str, str]]:
    """Yield ``("var", path)`` and ``("vars", jsonpath)`` for every literal data path.

    Paths inside the logic of ``map``/``filter``/``reduce``/``all``/``some``/``none``
    refer to the items being iterated, not to the workflow context, and are skipped.
    With ``template=True`` the value is walked as ``compile_template`` reads it.
    """
    if template and not is_rule(rule):
        if type(rule) is dict:
            for v in rule.values():
                yield from find_refs(v, template=True)
        elif isinstance(rule, list):
            for v in rule:
                yield from find_refs(v, template=True)
        return
    if isinstance(rule, list):
        for item in rule:
            yield from find_refs(item)
        return
    if type(rule) is not dict or len(rule) != 1:
        return
    ((op, args),) = rule.items()
    if not isinstance(args, list):
        args = [args]
    if op in ("var", "vars") and args and isinstance(args[0], str | int):
        yield op, str(args[0])
        args = args[1:]
    elif op in _SCOPED:
        args = [args[0], *args[2:]] if args else []
    for arg in args:
        yield from find_refs(arg)
