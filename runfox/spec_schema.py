"""The fields of a spec, one table per part, and the JSON Schema generated from them.

Each part of a spec (the top level, ``defaults``, a step, ``retry``, a branch, a
declared input) is a tuple of ``Field``: name, the JSON Schema of its value,
whether it is required, a description. ``runfox.spec`` reads these tables for
the names it accepts (an unknown field is refused with a did-you-mean), for the
required ones and, for fields marked ``checked``, for the value check itself
(``check_value``, a small JSON Schema subset also used for declared workflow
inputs). Fields with a parser of their own in ``runfox.spec`` (retry,
max_attempts, depends_on...) keep their own messages; ``tests/test_spec_schema.py``
checks on a corpus of valid and invalid specs that the compiler and the schema
agree. Branch actions come from ``runfox.actions``.

``json_schema()`` builds the JSON Schema (draft 2020-12) that editors use;
``schema_text()`` is its text, shipped as ``runfox/spec.schema.json`` and printed
by ``runfox schema``. After changing a table, regenerate the file::

    runfox schema > runfox/spec.schema.json

The schema is the shape of a spec; what only the compiler can check is listed in
``COMPILER_ONLY``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .actions import ACTIONS
from .retry import BACKOFFS

__all__ = [
    "COMPILER_ONLY",
    "DEPENDENCY_POLICIES",
    "INPUT_TYPES",
    "Field",
    "check_value",
    "json_schema",
    "schema_text",
]

#: Step ids are part of stored keys; SQL backends hold them in VARCHAR(255).
MAX_ID_LENGTH = 128
#: SQL backends hold a workflow's name in VARCHAR(255) (characters).
MAX_NAME_LENGTH = 255
ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$"
#: The JSON types a declared workflow input may have.
INPUT_TYPES = ("string", "number", "integer", "boolean", "object", "array")
#: What a step does when a dependency failed or was skipped (``on_dependency_failure``).
DEPENDENCY_POLICIES = ("fail", "skip", "run")
#: An exception class name for ``retry.on``: ``TimeoutError`` or ``package.module.Class``.
ERROR_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"

#: What the compiler refuses and the schema cannot say (cross-references, expressions).
COMPILER_ONLY = (
    "depends_on naming an unknown step, the step itself, or forming a cycle",
    "steps.X references to unknown steps, and cycles formed by derived dependencies",
    "a product with two producers, or required (or read as products.X) and produced by none",
    "a steps.* wildcard in a step with no depends_on (nothing can be derived from it)",
    "malformed JSON Logic in conditions, inputs, results and outputs",
    "duplicate step ids",
    "a set (loop) branch on a step with no halt or complete branch",
    "set targets naming unknown steps",
    "a declared input's default that does not match its type or enum",
    "a declared input that is required and has a default",
    "max_attempts written as a float (2.0 is an integer to JSON Schema)",
    "concurrency.key: malformed JSON Logic, or reading anything but input and step_input",
    "concurrency.limit written as a float",
    "a workflow step naming a sub-workflow missing from workflows, a cycle of "
    "sub-workflows, or a chain deeper than limits.workflow_depth",
)


@dataclass(frozen=True, slots=True)
class Field:
    """One field of one part of a spec.

    ``schema`` is the JSON Schema of the value; ``nullable`` fields may also be
    null (YAML's empty value), read as absent. ``checked`` fields are checked by
    ``check_value`` against ``schema``; the others by their own parser in
    ``runfox.spec``, whose rules ``schema`` states.
    """

    name: str
    schema: Mapping[str, Any]
    description: str
    required: bool = False
    nullable: bool = False
    checked: bool = False


def names(fields: Iterable[Field]) -> tuple[str, ...]:
    return tuple(f.name for f in fields)


_NUMBER = {"type": "number"}
_TEXT = {"type": "string"}
_ANY: dict[str, Any] = {}  # literals and JSON Logic: any JSON value

RETRY_FIELDS = (
    Field("backoff", {"enum": list(BACKOFFS)},
          "how the wait grows between attempts (default: fixed if delay is given, else none)"),
    Field("delay", {"type": "number", "minimum": 0}, "seconds before the first retry (default 1)"),
    Field("max_delay", {"type": "number", "minimum": 0},
          "the longest wait in seconds (default 300)"),
    Field("jitter", {"anyOf": [{"type": "boolean"},
                               {"type": "number", "minimum": 0, "maximum": 1}]},
          "a random fraction 0..1 of each wait added or taken (true = 0.5)"),
    Field("on", {"type": "array", "minItems": 1,
                 "items": {"type": "string", "pattern": ERROR_NAME_PATTERN}},
          "retry only these error types (and their subclasses where the class can be "
          "imported), e.g. [TimeoutError, ConnectionError]; others fail at once. WorkerLost "
          "is always retried"),
    Field("on_timeout", {"type": "boolean"},
          "false: a TimeoutError is not retried (default true)"),
)
#: A product name (``produces``/``requires``): read as ``products.NAME``, so no dots.
PRODUCT_PATTERN = ID_PATTERN
_PRODUCTS = {"type": "array", "items": {"type": "string", "pattern": PRODUCT_PATTERN,
                                        "maxLength": MAX_ID_LENGTH},
             "uniqueItems": True}
_RETRY = {"anyOf": [{"enum": list(BACKOFFS), "description": "a backoff name alone"},
                    {"$ref": "#/$defs/retry"}]}
_ATTEMPTS = {"type": "integer", "minimum": 1}
_TIMEOUT = {"type": "number", "exclusiveMinimum": 0}
#: Concurrency keys are stored in VARCHAR(255) columns with a prefix; keep them short.
MAX_CONCURRENCY_KEY_LENGTH = 200

CONCURRENCY_FIELDS = (
    Field("key", {"anyOf": [{"type": "string", "minLength": 1,
                             "maxLength": MAX_CONCURRENCY_KEY_LENGTH},
                            {"type": "object", "description": "a JSON Logic rule over input "
                             "(the workflow input) and step_input (the step's resolved "
                             "input) giving the key"}]},
          "jobs with the same key share the limit, across workers and executions",
          required=True),
    Field("limit", {"type": "integer", "minimum": 1},
          "how many jobs with this key may run at once", required=True),
)

CACHE_FIELDS = (
    Field("version", {"type": ["string", "integer"]},
          "part of every cache key of the step: bump it when the function's code changes "
          "(default: none)", checked=True),
    Field("max_age", {"type": "number", "exclusiveMinimum": 0},
          "seconds an entry stays fresh; an older entry is a miss (default: forever)",
          checked=True),
)
_CACHE = {"anyOf": [{"type": "boolean", "description": "true: cache with the defaults' "
                     "settings (or none); false: do not cache this step"},
                    {"$ref": "#/$defs/cache"}]}

DEFAULT_FIELDS = (
    Field("max_attempts", _ATTEMPTS, "attempts per step, the first included", nullable=True),
    Field("retry", _RETRY, "the wait between attempts", nullable=True),
    Field("timeout", _TIMEOUT, "seconds per attempt", nullable=True),
    Field("on_dependency_failure", {"enum": list(DEPENDENCY_POLICIES)},
          "when a dependency failed: fail (end the workflow at once, the default), skip "
          "(this step is skipped; a skipped dependency skips it too) or run (run anyway, "
          "seeing the error output); in defaults it also decides whether a failed step with "
          "no dependents ends the workflow at once", nullable=True, checked=True),
    Field("concurrency", {"$ref": "#/$defs/concurrency"},
          "at most limit jobs with the same key run at once", nullable=True),
    Field("cache", _CACHE,
          "reuse a stored output of the same fn with the same resolved inputs (and cache "
          "version) instead of running the step; only successful outputs are stored",
          nullable=True),
)

BRANCH_FIELDS = (
    Field("condition", _ANY, "a JSON Logic rule over steps, input, state and the output",
          required=True),
    Field("action", {"anyOf": [{"$ref": f"#/$defs/action_{kind.name}"} for kind in ACTIONS]},
          "what to do when the condition is true: "
          + "; ".join(f"{kind.shape}: {kind.description}" for kind in ACTIONS),
          required=True),
    Field("result", _ANY, "the halt outcome (literals and JSON Logic)"),
    Field("description", _TEXT, "for people", checked=True),
)

STEP_FIELDS = (
    Field("id", {"type": "string", "pattern": ID_PATTERN, "maxLength": MAX_ID_LENGTH},
          "unique; letters, digits, _ and -", required=True),
    Field("fn", {"type": "string", "minLength": 1, "not": {"pattern": "^workflow:"}},
          "the function name passed to the executor (a step has fn or workflow)"),
    Field("workflow", {"anyOf": [{"type": "string", "minLength": 1}, {"type": "object"}]},
          "run a sub-workflow instead of a fn: a name in workflows (a file path or a "
          "registered name, resolved when the spec is loaded), or a JSON Logic rule giving "
          "one when the step runs; input becomes the child's workflow inputs"),
    Field("description", _TEXT, "for people", checked=True),
    Field("depends_on", {"anyOf": [{"type": "string"},
                                   {"type": "array", "items": {"type": "string"},
                                    "uniqueItems": True}]},
          "steps that must complete first, besides those derived from the steps.X and "
          "products.X the step reads", nullable=True),
    Field("input", {"type": "object"}, "the step's input: literals and JSON Logic, resolved "
          "at dispatch", nullable=True),
    Field("branch", {"type": "array", "items": {"$ref": "#/$defs/branch"}},
          "checked in order after each attempt; the first true condition wins", nullable=True),
    Field("produces", _PRODUCTS, "the products this step makes: another step reads one with "
          "{var: products.NAME} or lists it in requires (each product has one producer)",
          nullable=True),
    Field("requires", _PRODUCTS, "products this step needs: it depends on their producers",
          nullable=True),
    *DEFAULT_FIELDS,
    Field("map", _ANY, "run the step once per item of this JSON list (any expression "
          "giving one); its input reads {var: item} and {var: index}; its output is the "
          "list of the items' outputs, in item order", nullable=True),
    Field("max_parallel", {"type": "integer", "minimum": 1},
          "map steps: at most this many items in progress at once", nullable=True),
    Field("tolerate", {"anyOf": [{"type": "integer", "minimum": 0},
                                 {"type": "number", "minimum": 0, "maximum": 1}]},
          "map steps: how many item failures the map survives: a count (2) or a fraction "
          "of the items (0.25); failed items appear as error outputs", nullable=True),
)

INPUT_FIELDS = (
    Field("type", {"enum": list(INPUT_TYPES)}, "the JSON type of the value", checked=True),
    Field("enum", {"type": "array", "minItems": 1}, "the values allowed", checked=True),
    Field("required", {"type": "boolean"},
          "must be given (default: true unless there is a default)", checked=True),
    Field("default", _ANY, "the value used when the input is not given"),
    Field("description", _TEXT, "for people (shown by runfox run --help-inputs)",
          checked=True),
)

TOP_FIELDS = (
    Field("name", {"type": "string", "maxLength": MAX_NAME_LENGTH}, "the workflow's name"),
    Field("description", _TEXT, "for people", checked=True),
    Field("version", {"type": ["string", "number"]}, "for people; not interpreted",
          checked=True),
    Field("metadata", {"type": "object"}, "anything; not interpreted", checked=True),
    Field("inputs", {"type": "object", "additionalProperties": {"$ref": "#/$defs/input"}},
          "the workflow inputs, checked when an execution is created", nullable=True),
    Field("defaults", {"$ref": "#/$defs/defaults"}, "applied to steps that do not say",
          nullable=True),
    Field("steps", {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/step"}},
          "the steps, in order", required=True),
    Field("outputs", {"type": "object"}, "the outcome, resolved when every step is complete",
          nullable=True),
    Field("max_parallel", {"type": "integer", "minimum": 1},
          "at most this many steps of one execution in progress at once", nullable=True,
          checked=True),
    Field("workflows", {"type": "object", "additionalProperties": {"type": "object"}},
          "the sub-workflow specs workflow steps name, by name (filled in from files and "
          "registered names when a spec is loaded, so the stored spec carries them)",
          nullable=True),
)


# ---------------------------------------------------------------------------
# Checking a value against a (small) schema
# ---------------------------------------------------------------------------


def _is_type(value: Any, name: str) -> bool:
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and math.isfinite(value) and value.is_integer())
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "null":
        return value is None
    raise ValueError(f"unknown JSON type {name!r}")


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_value(schema: Mapping[str, Any], value: Any) -> list[str]:
    """What is wrong with ``value`` under ``schema``; empty when nothing is.

    Understands the subset the field tables and declared inputs use: ``type`` (a
    name or a list), ``enum``, ``const``, ``minimum``, ``maximum``,
    ``exclusiveMinimum``, ``minLength``, ``maxLength``, ``minItems`` and
    ``pattern``. Messages read ``expected integer, got "3"``.
    """
    kind = schema.get("type")
    if kind is not None:
        kinds = [kind] if isinstance(kind, str) else list(kind)
        if not any(_is_type(value, k) for k in kinds):
            return [f"expected {' or '.join(kinds)}, got {_shown(value)}"]
    if "const" in schema and value != schema["const"]:
        return [f"expected {_shown(schema['const'])}, got {_shown(value)}"]
    if "enum" in schema and not any(_same(value, v) for v in schema["enum"]):
        allowed = ", ".join(_shown(v) for v in schema["enum"])
        return [f"expected one of {allowed}, got {_shown(value)}"]
    problems = []
    if _is_type(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"must be >= {schema['minimum']}, got {_shown(value)}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            problems.append(f"must be > {schema['exclusiveMinimum']}, got {_shown(value)}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"must be <= {schema['maximum']}, got {_shown(value)}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            problems.append("must not be empty" if schema["minLength"] == 1
                            else f"must be at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            problems.append(f"is {len(value)} characters long; the limit is "
                            f"{schema['maxLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            problems.append(f"{_shown(value)} does not match {schema['pattern']}")
    if isinstance(value, list) and len(value) < schema.get("minItems", 0):
        problems.append(f"needs at least {schema['minItems']} item(s)")
    return problems


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``1 == True`` in Python, not in JSON."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


# ---------------------------------------------------------------------------
# The JSON Schema
# ---------------------------------------------------------------------------


def _field_schema(field: Field) -> dict[str, Any]:
    schema = dict(field.schema)
    if field.nullable:
        if isinstance(schema.get("type"), str) and len(schema) == 1:
            schema["type"] = [schema["type"], "null"]
        else:
            schema = {"anyOf": [schema, {"type": "null"}]}
    if field.description:
        schema["description"] = field.description
    return schema


def _object(fields: Iterable[Field], description: str) -> dict[str, Any]:
    fields = tuple(fields)
    schema: dict[str, Any] = {
        "type": "object",
        "description": description,
        "properties": {f.name: _field_schema(f) for f in fields},
        "additionalProperties": False,
    }
    required = [f.name for f in fields if f.required]
    if required:
        schema["required"] = required
    return schema


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a spec file, built from the field tables and ``ACTIONS``."""
    defs: dict[str, Any] = {
        "defaults": _object(DEFAULT_FIELDS, "applied to steps that do not say"),
        "retry": _object(RETRY_FIELDS, "retry policy"),
        "step": {**_object(STEP_FIELDS, "one step"),
                 "oneOf": [{"required": ["fn"]}, {"required": ["workflow"]}]},
        "branch": _object(BRANCH_FIELDS, "one branch: a condition and an action"),
        "input": _object(INPUT_FIELDS, "one declared workflow input"),
        "concurrency": _object(CONCURRENCY_FIELDS, "a concurrency limit shared by key"),
        "cache": _object(CACHE_FIELDS, "step cache settings"),
    }
    for kind in ACTIONS:
        defs[f"action_{kind.name}"] = {**kind.schema, "description": kind.description}
    schema = _object(TOP_FIELDS, "A runfox workflow spec (YAML or JSON).")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "runfox workflow spec",
        **schema,
        "$defs": defs,
    }


def schema_text() -> str:
    """The schema as shipped in ``runfox/spec.schema.json`` (sorted keys, newline at end)."""
    return json.dumps(json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
