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
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping
from functools import lru_cache
from typing import Any

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
        return ",".join("" if v is None else _js_str(v) for v in value)
    return "[object Object]"


def _to_primitive(value: Any) -> Any:
    if isinstance(value, list | tuple | Mapping):
        return _js_str(value)
    return value


_NUMBER_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


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


_PREFIX_RE = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)")


def _parse_float(value: Any) -> float | int:
    """JavaScript's parseFloat(value): the longest numeric prefix of String(value)."""
    t = type(value)
    if t is int or t is float:
        return value
    match = _PREFIX_RE.match(_js_str(value))
    if not match:
        return math.nan
    text = match.group(1)
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
    return total


def _op_times(*args: Any) -> float | int:
    if not args:
        return math.nan
    product: float | int = _parse_float(args[0])
    for arg in args[1:]:
        product *= _parse_float(arg)
    return product


def _op_minus(a: Any = None, *rest: Any) -> float | int:
    if not rest:
        return -_to_number(a)
    return _to_number(a) - _to_number(rest[0])


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
    return "".join("" if a is None else _js_str(a) for a in args)


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
    merged: list[Any] = []
    for arg in args:
        if isinstance(arg, list | tuple):
            merged.extend(arg)
        else:
            merged.append(arg)
    return merged


def _op_log(value: Any = None, *_: Any) -> Any:
    logger.info("%r", value)
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
            raise ExpressionError(f"{op!r} failed on {list(values)!r}: {exc}") from exc

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
        return [logic(item) for item in items] if isinstance(items, list) else []

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
        for item in items:
            accumulator = logic({"current": item, "accumulator": accumulator})
        return accumulator

    return reduce_


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


def is_rule(value: Any) -> bool:
    """True for a dict with exactly one key that names an operator."""
    return type(value) is dict and len(value) == 1 and next(iter(value)) in OPERATORS


def compile_rule(rule: Any) -> Compiled:
    """Compile a JSON Logic rule into a function of the data.

    Raises ``ExpressionError`` for an unknown operator or a JSONPath that does not
    parse. The compiled function raises ``ExpressionError`` when evaluation fails.
    """
    return _compile(rule)


def compile_template(value: Any) -> Compiled:
    """Compile a value that may contain rules anywhere inside it.

    A dict that is a rule (one key, an operator) is compiled as a rule; any other
    dict or list is a container whose members are compiled the same way; everything
    else is a literal. This is how step ``input`` and workflow ``outputs`` resolve.
    """
    if is_rule(value):
        return _compile(value)
    if type(value) is dict:
        items = [(k, compile_template(v)) for k, v in value.items()]
        if all(type(c) is _Const for _, c in items):
            return _Const(value)
        return lambda data: {k: c(data) for k, c in items}
    if isinstance(value, list):
        parts = [compile_template(v) for v in value]
        if all(type(p) is _Const for p in parts):
            return _Const(value)
        return lambda data: [p(data) for p in parts]
    return _Const(value)


@lru_cache(maxsize=512)
def _compile_cached(key: str) -> Compiled:
    return _compile(json.loads(key))


def evaluate(rule: Any, data: Any = None) -> Any:
    """Evaluate a JSON Logic rule against ``data`` (``None`` means ``{}``).

    Compiled rules are cached, so evaluating the same rule again is cheap.
    """
    if data is None:
        data = {}
    try:
        key = json.dumps(rule, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return _compile(rule)(data)
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
