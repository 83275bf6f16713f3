"""Workflow definitions: load, validate, compile.

A spec arrives as YAML text, a YAML file or a dict. ``compile_spec`` checks all of
it before anything is stored and reports every problem at once, each with its
place (``steps[1] 'shout'.depends_on[0]``). What it returns, a ``WorkflowSpec``,
holds every expression compiled once, the dependency graph in both directions, and
per-step retry policy; the graph functions run on it and never re-read the raw
dict. Compiled specs are cached by ``workflow_id`` (the MD5 of the canonical spec
JSON), so a thousand executions of one definition compile it once.

The shape of a spec::

    name: example              # optional
    description: ...           # optional
    defaults:                  # optional, applied to steps that do not say
      max_attempts: 3
      retry: {backoff: exponential, delay: 1, max_delay: 60, jitter: 0.2}
      timeout: 30
    steps:
      - id: greet              # unique; letters, digits, _ and -
        fn: make_greeting      # passed to the executor
        depends_on: [other]    # optional
        input: {...}           # literals and JSON Logic, resolved at dispatch
        branch:                # optional, first true condition wins
          - condition: {...}
            action: halt | complete | {set: steps.X.status, value: ready}
            result: {...}      # halt payload
        max_attempts: 1
        retry: {...}
        timeout: 30            # seconds per attempt
    outputs: {...}             # resolved when every step is complete
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import limits
from .errors import ExpressionError, SpecError, SpecProblem
from .expressions import Compiled, compile_rule, compile_template, find_refs
from .jsonvalue import json_copy
from .retry import BACKOFFS, RetryPolicy

__all__ = [
    "Branch",
    "StepSpec",
    "WorkflowSpec",
    "canonical_json",
    "compile_spec",
    "load_spec",
    "parse_yaml",
    "spec_for",
    "workflow_id_for",
]

_TOP_KEYS = ("name", "description", "version", "defaults", "steps", "outputs", "metadata")
_STEP_KEYS = (
    "id", "fn", "description", "depends_on", "input", "branch", "max_attempts", "retry",
    "timeout",
)
_DEFAULT_KEYS = ("max_attempts", "retry", "timeout")
_RETRY_KEYS = ("backoff", "delay", "max_delay", "jitter")
_BRANCH_KEYS = ("condition", "action", "result", "description")
_ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]*")
#: Step ids are part of stored keys; SQL backends hold them in VARCHAR(255).
MAX_ID_LENGTH = 128
#: SQL backends hold a workflow's name in VARCHAR(255) (characters).
MAX_NAME_LENGTH = 255
_STEPS_REF_RE = re.compile(r"^(?:\$\.)?steps\.([A-Za-z0-9_\-]+)")
_SET_TARGET_RE = re.compile(r"^steps\.([^.]+)\.status$")


@dataclass(frozen=True, slots=True)
class Branch:
    """One branch of a step: ``action`` is ``halt``, ``complete`` or ``set``."""

    index: int
    condition: Compiled
    action: str
    targets: tuple[str, ...] = ()
    result: Compiled | None = None


@dataclass(frozen=True, slots=True)
class StepSpec:
    """A validated step with its expressions compiled."""

    id: str
    index: int
    fn: str
    depends_on: tuple[str, ...]
    dependents: tuple[str, ...]
    inputs: Compiled
    branches: tuple[Branch, ...]
    max_attempts: int
    retry: RetryPolicy
    timeout: float | None


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    """A validated, compiled workflow definition. Immutable and shared."""

    raw: dict[str, Any]
    workflow_id: str
    name: str
    steps: tuple[StepSpec, ...]
    by_id: dict[str, StepSpec]
    outputs: Compiled
    index: dict[str, int] = field(repr=False)

    def step(self, step_id: str) -> StepSpec:
        return self.by_id[step_id]

    def descendants(self, roots: Iterable[str]) -> list[str]:
        """``roots`` and every step that depends on them, transitively, in spec order."""
        seen = set(roots)
        frontier = list(seen)
        while frontier:
            for dependent in self.by_id[frontier.pop()].dependents:
                if dependent not in seen:
                    seen.add(dependent)
                    frontier.append(dependent)
        return sorted(seen, key=self.index.__getitem__)


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


# libyaml's parser and composer when present (several times faster); the constructor
# is PyYAML's SafeConstructor either way.
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _SpecLoader(_BaseLoader):  # type: ignore[valid-type, misc]
    """A safe loader that refuses duplicate keys, alias bombs and deep nesting.

    Aliases make the composed document a graph in which one node may be reached
    many times; constructing it expands every reach. Before constructing,
    ``construct_document`` measures the graph (each node once, memoised): how many
    nodes the aliases add and how deep the document nests. Too many or too deep is
    a ``_LimitExceeded`` with the place, raised in time proportional to the text.
    """

    def construct_document(self, node: yaml.Node) -> Any:
        _measure(node)
        return super().construct_document(node)


class _LimitExceeded(Exception):
    """A YAML document exceeds a limit; ``mark`` is where, when known."""

    def __init__(self, message: str, mark: Any = None) -> None:
        super().__init__(message)
        self.mark = mark


def _measure(root: yaml.Node) -> None:
    """Refuse a composed document that aliases expand too much or that nests too deeply.

    Sizes count a node once per reach (what construction would build), heights
    count container levels; both are memoised per collection node, so a
    billion-node bomb is measured in a few hundred steps. (A scalar counts once
    per reach without a memo: an alias to a scalar is written in the text, so it
    cannot multiply.) A node that contains itself through an alias is refused
    too: JSON cannot hold it.
    """
    limit = limits.current()
    scalar, sequence = yaml.ScalarNode, yaml.SequenceNode
    if type(root) is scalar:
        return
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    keep: list[yaml.Node] = []  # ids stay unique while the nodes live
    open_kids: dict[int, list[yaml.Node]] = {}  # entered, not finished: the current path
    written = 0
    stack: list[yaml.Node] = [root]
    while stack:
        node = stack[-1]
        key = id(node)
        kids = open_kids.get(key)
        if kids is None:  # first visit: push the collections below it
            if key in size:
                stack.pop()
                continue
            kids = (node.value if type(node) is sequence
                    else [part for pair in node.value for part in pair])
            open_kids[key] = kids
            for kid in kids:
                if type(kid) is scalar:
                    continue
                if id(kid) in open_kids:
                    raise _LimitExceeded("an alias refers to a node that contains it; a spec "
                                         "cannot be recursive", kid.start_mark)
                if id(kid) not in size:
                    stack.append(kid)
            continue
        stack.pop()  # every collection below is measured
        del open_kids[key]
        total, deepest = 1, 0
        for kid in kids:
            if type(kid) is scalar:
                total += 1
            else:
                total += size[id(kid)]
                deepest = max(deepest, height[id(kid)])
        size[key] = total
        height[key] = deepest + 1
        written += 1 + sum(type(kid) is scalar for kid in kids)
        keep.append(node)
    expansions = size[id(root)] - written
    allowed = max(limit.yaml_aliases, 10 * written)
    if expansions > allowed:
        raise _LimitExceeded(
            f"aliases expand the document by {expansions:,} nodes, over the limit of "
            f"{allowed:,} (max(yaml_aliases={limit.yaml_aliases:,}, 10 x the {written:,} nodes "
            "written); RUNFOX_LIMIT_YAML_ALIASES raises it)", root.start_mark)
    if height[id(root)] > limit.depth:
        node = root
        for _ in range(limit.depth):  # walk down the deepest branch to the level over the limit
            node = max((k for k in _children(node) if type(k) is not scalar),
                       key=lambda k: height[id(k)])
        raise _LimitExceeded(_too_deep_text(limit.depth), node.start_mark)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _too_deep_text(depth: int) -> str:
    return (f"nested more than {depth} levels deep, over the depth limit "
            "(RUNFOX_LIMIT_DEPTH raises it)")


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_SpecLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _where(source: str, mark: Any) -> str:
    return f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source


def _check_size(size: int, source: str) -> None:
    limit = limits.current().spec_bytes
    if size > limit:
        raise SpecError([SpecProblem(source, f"the spec is {size:,} bytes, over the limit of "
                                             f"{limit:,} (RUNFOX_LIMIT_SPEC_BYTES raises it)")],
                        source=source)


def parse_yaml(text: str, source: str = "<string>") -> dict[str, Any]:
    """Parse YAML text into a spec dict; malformed YAML is a ``SpecError`` with its line.

    So is a text over ``limits.spec_bytes`` (checked before parsing), a document
    whose aliases expand it too much or that nests too deeply (see ``runfox.limits``).
    """
    _check_size(len(text) if text.isascii() else len(text.encode("utf-8", "replace")),
                source)
    try:
        data = yaml.load(text, Loader=_SpecLoader)
    except _LimitExceeded as exc:
        raise SpecError([SpecProblem(_where(source, exc.mark), str(exc))],
                        source=source) from None
    except RecursionError:  # the pure-Python composer recurses per level
        raise SpecError([SpecProblem(source, _too_deep_text(limits.current().depth))],
                        source=source) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        message = f"malformed YAML: {problem}" + (f" ({context})" if context else "")
        raise SpecError([SpecProblem(_where(source, mark), message)], source=source) from exc
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise SpecError(
            [SpecProblem(source, f"a workflow spec must be a mapping, this document is {kind}")],
            source=source,
        )
    return data


def load_spec(source: str | os.PathLike[str] | Mapping[str, Any]) -> WorkflowSpec:
    """Load and compile a spec from a dict, a ``Path`` to a YAML file, or YAML text.

    A ``str`` is read as YAML text (as ``Workflow.from_yaml`` does); pass a
    ``pathlib.Path`` to read a file.
    """
    if isinstance(source, Mapping):
        return spec_for(dict(source))
    if isinstance(source, os.PathLike):
        path = Path(source)
        try:
            _check_size(path.stat().st_size, str(path))
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SpecError([SpecProblem(str(path), f"cannot read: {exc.strerror}")]) from exc
        return spec_for(parse_yaml(text, str(path)), source=str(path))
    return spec_for(parse_yaml(source))


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def workflow_id_for(raw: Mapping[str, Any]) -> str:
    """The MD5 of the canonical JSON of a spec: the same for every execution of it."""
    return hashlib.md5(canonical_json(raw).encode("utf-8"), usedforsecurity=False).hexdigest()


# ---------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------

_CACHE: OrderedDict[str, WorkflowSpec] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 256


def spec_for(raw: dict[str, Any], workflow_id: str | None = None, *,
             source: str | None = None) -> WorkflowSpec:
    """The compiled spec for ``raw``, compiled at most once per ``workflow_id``.

    ``source`` names where ``raw`` came from, for error messages.
    """
    try:
        key = workflow_id or workflow_id_for(raw)
    except (TypeError, ValueError, RecursionError):  # not JSON: let compile_spec say where
        return compile_spec(raw, source=source)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            _CACHE.move_to_end(key)
            return cached
    compiled = compile_spec(raw, source=source, workflow_id=key)
    with _CACHE_LOCK:
        _CACHE[key] = compiled
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return compiled


# ---------------------------------------------------------------------------
# Validation and compilation
# ---------------------------------------------------------------------------


class _Problems:
    def __init__(self) -> None:
        self.items: list[SpecProblem] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(SpecProblem(where, message))


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.7)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_keys(
    problems: _Problems, where: str, data: Mapping[str, Any], allowed: tuple[str, ...]
) -> None:
    for key in data:
        if key not in allowed:
            problems.add(
                f"{where}.{key}" if where else str(key),
                f"unknown field {key!r}{_suggest(str(key), allowed)}; expected one of "
                + ", ".join(allowed),
            )


def _check_json(problems: _Problems, where: str, value: Any, room: int | None = None) -> None:
    """Report every part of ``value`` that JSON cannot hold, with its path.

    ``room`` is how many more levels of containers may nest here (the depth limit
    at the top); deeper parts are reported once, where the limit is reached.
    """
    if room is None:
        room = limits.current().depth
    if value is None or isinstance(value, bool | str | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            problems.add(where, f"{value!r} is not a finite number; JSON cannot hold it")
        return
    if isinstance(value, list | dict) and room <= 0:
        problems.add(where, _too_deep_text(limits.current().depth))
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(problems, f"{where}[{i}]", item, room - 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                problems.add(
                    f"{where}.{key}",
                    f"key {key!r} is a {type(key).__name__}; JSON keys are strings",
                )
            _check_json(problems, f"{where}.{key}", item, room - 1)
        return
    hint = "; quote it in YAML" if type(value).__name__ in ("date", "datetime") else ""
    problems.add(where, f"{value!r} is a {type(value).__name__}, not a JSON value{hint}")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parse_retry(problems: _Problems, where: str, raw: Any) -> RetryPolicy | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = {"backoff": raw}
    if not isinstance(raw, dict):
        problems.add(where, "retry must be a mapping such as {backoff: exponential, delay: 1}")
        return None
    _check_keys(problems, where, raw, _RETRY_KEYS)
    backoff = raw.get("backoff", "fixed" if "delay" in raw else "none")
    ok = True
    if backoff not in BACKOFFS:
        problems.add(f"{where}.backoff", f"{backoff!r} is not one of {', '.join(BACKOFFS)}")
        ok = False
    values: dict[str, float] = {}
    for name, default in (("delay", 1.0), ("max_delay", 300.0)):
        value = raw.get(name, default)
        if not _number(value) or value < 0:
            problems.add(f"{where}.{name}", f"must be a number >= 0, got {value!r}")
            ok = False
        else:
            values[name] = float(value)
    jitter = raw.get("jitter", 0.0)
    if jitter is True:
        jitter = 0.5
    elif jitter is False:
        jitter = 0.0
    if not _number(jitter) or not 0 <= jitter <= 1:
        problems.add(f"{where}.jitter", f"must be true, false or a fraction 0..1, got {jitter!r}")
        ok = False
    if not ok:
        return None
    return RetryPolicy(backoff, values["delay"], values["max_delay"], float(jitter))


def _parse_attempts(problems: _Problems, where: str, raw: Any) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        problems.add(where, f"max_attempts must be an integer >= 1, got {raw!r}")
        return None
    return raw


def _parse_timeout(problems: _Problems, where: str, raw: Any) -> float | None:
    if raw is None:
        return None
    if not _number(raw) or raw <= 0:
        problems.add(where, f"timeout must be a number of seconds > 0, got {raw!r}")
        return None
    return float(raw)


def _compile(
    problems: _Problems, where: str, value: Any, *, template: bool
) -> Compiled | None:
    try:
        return compile_template(value) if template else compile_rule(value)
    except ExpressionError as exc:
        problems.add(where, str(exc))
        return None


def _find_cycle(order: list[str], deps: dict[str, tuple[str, ...]]) -> list[str] | None:
    """Return one dependency cycle as a list of ids (first id repeated at the end)."""
    colour: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for root in order:
        if root in colour:
            continue
        path: list[str] = []
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            node, i = stack.pop()
            if i == 0:
                colour[node] = 1
                path.append(node)
            children = deps.get(node, ())
            if i < len(children):
                stack.append((node, i + 1))
                child = children[i]
                state = colour.get(child)
                if state == 1:
                    return [*path[path.index(child):], child]
                if state is None and child in deps:
                    stack.append((child, 0))
            else:
                colour[node] = 2
                path.pop()
    return None


def _is_upstream(
    target: str, start: str, deps: dict[str, tuple[str, ...]], memo: dict[str, set[str]]
) -> bool:
    """True when ``target`` is a transitive dependency of ``start``."""
    direct = deps.get(start, ())
    if target in direct:
        return True
    ancestors = memo.get(start)
    if ancestors is None:
        ancestors = set()
        frontier = list(direct)
        while frontier:
            node = frontier.pop()
            if node not in ancestors:
                ancestors.add(node)
                frontier.extend(deps.get(node, ()))
        memo[start] = ancestors
    return target in ancestors


def _step_refs(value: Any, *, template: bool) -> list[str]:
    """Step ids named by ``steps.X`` paths inside a rule or template."""
    found = []
    for kind, path in find_refs(value, template=template):
        if kind == "var":
            parts = path.split(".")
            if len(parts) >= 2 and parts[0] == "steps":
                found.append(parts[1])
        else:
            match = _STEPS_REF_RE.match(path)
            if match and match.group(1) != "*":
                found.append(match.group(1))
    return found


def _set_targets(problems: _Problems, where: str, action: dict[str, Any]) -> list[str]:
    raw = action.get("set")
    items = raw if isinstance(raw, list) else [raw]
    targets = []
    for item in items:
        if not isinstance(item, str) or not item:
            problems.add(f"{where}.set", f"set target must be 'steps.<id>.status', got {item!r}")
            continue
        match = _SET_TARGET_RE.match(item)
        if match:
            targets.append(match.group(1))
        elif "." not in item:
            targets.append(item)
        else:
            problems.add(f"{where}.set", f"set target must be 'steps.<id>.status', got {item!r}")
    value = action.get("value", "ready")
    if value not in ("ready", "pending"):
        problems.add(f"{where}.value", f"a set action can only make a step 'ready', got {value!r}")
    _check_keys(problems, where, action, ("set", "value"))
    return targets


def _dict_template(compiled: dict[str, Compiled | None]) -> Compiled:
    """One compiled function for a mapping of names to compiled templates."""
    parts = [(k, c) for k, c in compiled.items() if c is not None]
    return lambda data: {k: c(data) for k, c in parts}


def compile_spec(
    raw: dict[str, Any], *, source: str | None = None, workflow_id: str | None = None
) -> WorkflowSpec:
    """Validate ``raw`` completely and compile it. Raises ``SpecError`` listing every problem."""
    problems = _Problems()
    if not isinstance(raw, dict):
        raise SpecError(
            [SpecProblem("", f"a workflow spec must be a mapping, got {type(raw).__name__}")],
            source=source,
        )
    _check_keys(problems, "", raw, _TOP_KEYS)
    _check_json(problems, "spec", raw)
    if problems.items:  # non-JSON values would break everything below; report them now
        raise SpecError(problems.items, source=source)
    raw = json_copy(raw)  # compiled specs are shared and cached: never alias the caller's dict

    name = raw.get("name", "")
    if not isinstance(name, str):
        problems.add("name", f"must be a string, got {name!r}")
        name = ""
    elif len(name) > MAX_NAME_LENGTH:
        problems.add("name", f"the name is {len(name)} characters long; the limit is "
                             f"{MAX_NAME_LENGTH} (what SQL backends can store)")
        name = ""

    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        problems.add("defaults", "must be a mapping")
        defaults = {}
    _check_keys(problems, "defaults", defaults, _DEFAULT_KEYS)
    default_attempts = _parse_attempts(problems, "defaults.max_attempts",
                                       defaults.get("max_attempts"))
    default_retry = _parse_retry(problems, "defaults.retry", defaults.get("retry"))
    default_timeout = _parse_timeout(problems, "defaults.timeout", defaults.get("timeout"))

    raw_steps = raw.get("steps")
    if raw_steps is None:
        problems.add("steps", "missing: a workflow needs a list of steps")
        raw_steps = []
    elif not isinstance(raw_steps, list) or not raw_steps:
        problems.add("steps", "must be a non-empty list of steps")
        raw_steps = []

    # Pass 1: ids, so that later checks can name steps and resolve references.
    places: list[str] = []
    ids: list[str | None] = []
    seen: dict[str, int] = {}
    for i, step in enumerate(raw_steps):
        place = f"steps[{i}]"
        if not isinstance(step, dict):
            problems.add(place, f"a step must be a mapping, got {type(step).__name__}")
            places.append(place)
            ids.append(None)
            continue
        sid = step.get("id")
        if sid is None:
            problems.add(place, "missing 'id'")
        elif not isinstance(sid, str) or not _ID_RE.fullmatch(sid):
            problems.add(
                f"{place}.id",
                f"{sid!r} is not a valid step id (letters, digits, '_' and '-'; "
                "no '.', '#' or spaces)",
            )
            sid = None
        elif len(sid) > MAX_ID_LENGTH:
            problems.add(f"{place}.id", f"step id is {len(sid)} characters long; the limit is "
                                        f"{MAX_ID_LENGTH}")
            sid = None
        elif sid in seen:
            problems.add(f"{place}.id", f"duplicate id {sid!r} (first used by steps[{seen[sid]}])")
            sid = None
        else:
            seen[sid] = i
            place = f"steps[{i}] {sid!r}"
        places.append(place)
        ids.append(sid)

    known = set(seen)
    deps: dict[str, tuple[str, ...]] = {}
    for i, step in enumerate(raw_steps):
        sid = ids[i]
        if not isinstance(step, dict):
            continue
        place = places[i]
        raw_deps = step.get("depends_on") or []
        if isinstance(raw_deps, str):
            raw_deps = [raw_deps]
        if not isinstance(raw_deps, list):
            problems.add(f"{place}.depends_on", "must be a list of step ids")
            raw_deps = []
        clean: list[str] = []
        listed: set[str] = set()
        for j, dep in enumerate(raw_deps):
            where = f"{place}.depends_on[{j}]"
            if not isinstance(dep, str):
                problems.add(where, f"must be a step id, got {dep!r}")
            elif dep not in known:
                problems.add(where, f"unknown step {dep!r}{_suggest(dep, known)}")
            elif dep == sid:
                problems.add(where, "a step cannot depend on itself")
            elif dep in listed:
                problems.add(where, f"{dep!r} is listed twice")
            else:
                clean.append(dep)
                listed.add(dep)
        if sid is not None:
            deps[sid] = tuple(clean)

    order = [sid for sid in ids if sid is not None]
    cycle = _find_cycle(order, deps)
    if cycle:
        problems.add("steps", "dependency cycle: " + " -> ".join(cycle))

    dependents: dict[str, list[str]] = {sid: [] for sid in order}
    for sid in order:
        for dep in deps[sid]:
            dependents[dep].append(sid)

    memo: dict[str, set[str]] = {}

    def check_refs(where: str, owner: str | None, value: Any, *, template: bool,
                   allow_self: bool) -> None:
        for ref in _step_refs(value, template=template):
            if ref not in known:
                problems.add(where, f"refers to steps.{ref}, but there is no step {ref!r}"
                             f"{_suggest(ref, known)}")
            elif owner is None or (allow_self and ref == owner):
                continue
            elif cycle is None and not _is_upstream(ref, owner, deps, memo):
                problems.add(
                    where,
                    f"refers to steps.{ref}, which is not upstream of {owner!r}; "
                    f"add {ref!r} to depends_on",
                )

    compiled_steps: list[StepSpec] = []
    for i, step in enumerate(raw_steps):
        sid = ids[i]
        if not isinstance(step, dict):
            continue
        place = places[i]
        _check_keys(problems, place, step, _STEP_KEYS)
        fn = step.get("fn")
        if fn is None:
            problems.add(place, "missing 'fn' (the function name passed to the executor)")
        elif not isinstance(fn, str) or not fn:
            problems.add(f"{place}.fn", f"must be a non-empty string, got {fn!r}")

        raw_input = step.get("input")
        if raw_input is None:
            raw_input = {}
        if not isinstance(raw_input, dict):
            problems.add(f"{place}.input", "must be a mapping of input name to value")
            raw_input = {}
        inputs = {}
        for key, value in raw_input.items():
            where = f"{place}.input.{key}"
            inputs[key] = _compile(problems, where, value, template=True)
            check_refs(where, sid, value, template=True, allow_self=False)

        attempts = _parse_attempts(problems, f"{place}.max_attempts", step.get("max_attempts"))
        retry = _parse_retry(problems, f"{place}.retry", step.get("retry"))
        timeout = _parse_timeout(problems, f"{place}.timeout", step.get("timeout"))

        branches: list[Branch] = []
        raw_branches = step.get("branch") or []
        if not isinstance(raw_branches, list):
            problems.add(f"{place}.branch", "must be a list of {condition, action} entries")
            raw_branches = []
        has_set = has_exit = False
        for j, entry in enumerate(raw_branches):
            where = f"{place}.branch[{j}]"
            if not isinstance(entry, dict):
                problems.add(where, "must be a mapping with 'condition' and 'action'")
                continue
            _check_keys(problems, where, entry, _BRANCH_KEYS)
            if "condition" not in entry:
                problems.add(where, "missing 'condition'")
            condition = _compile(problems, f"{where}.condition", entry.get("condition", False),
                                 template=False)
            check_refs(f"{where}.condition", sid, entry.get("condition"), template=False,
                       allow_self=True)
            action = entry.get("action")
            targets: list[str] = []
            kind = None
            if action in ("halt", "complete"):
                kind = action
                has_exit = True
            elif isinstance(action, dict) and "set" in action:
                kind = "set"
                has_set = True
                targets = _set_targets(problems, f"{where}.action", action)
                for target in targets:
                    if target not in known:
                        problems.add(f"{where}.action.set",
                                     f"no step {target!r} to reset{_suggest(target, known)}")
            elif action is None:
                problems.add(where, "missing 'action' (halt, complete or {set: ...})")
            else:
                problems.add(f"{where}.action",
                             f"unknown action {action!r}; expected halt, complete or "
                             "{set: steps.<id>.status, value: ready}")
            result = None
            if "result" in entry:
                result = _compile(problems, f"{where}.result", entry["result"], template=True)
                check_refs(f"{where}.result", sid, entry["result"], template=True,
                           allow_self=True)
            if kind and condition is not None:
                branches.append(Branch(j, condition, kind, tuple(targets), result))
        if has_set and not has_exit:
            problems.add(f"{place}.branch",
                         "a step with a set (loop) branch also needs a halt or complete branch, "
                         "or the loop can never end")

        if sid is None or fn is None or not isinstance(fn, str):
            continue

        compiled_steps.append(
            StepSpec(
                id=sid,
                index=len(compiled_steps),
                fn=fn,
                depends_on=deps.get(sid, ()),
                dependents=tuple(dependents.get(sid, ())),
                inputs=_dict_template(inputs),
                branches=tuple(branches),
                max_attempts=attempts or default_attempts or 1,
                retry=retry or default_retry or RetryPolicy(),
                timeout=timeout if timeout is not None else default_timeout,
            )
        )

    raw_outputs = raw.get("outputs")
    outputs: Compiled | None = None
    if raw_outputs is None:
        raw_outputs = {}
    if not isinstance(raw_outputs, dict):
        problems.add("outputs", "must be a mapping of output name to value")
    else:
        compiled_outputs = {}
        for key, value in raw_outputs.items():
            compiled_outputs[key] = _compile(problems, f"outputs.{key}", value, template=True)
            check_refs(f"outputs.{key}", None, value, template=True, allow_self=False)
        outputs = _dict_template(compiled_outputs)

    if problems.items:
        raise SpecError(problems.items, source=source)
    assert outputs is not None
    by_id = {s.id: s for s in compiled_steps}
    return WorkflowSpec(
        raw=raw,
        workflow_id=workflow_id or workflow_id_for(raw),
        name=name,
        steps=tuple(compiled_steps),
        by_id=by_id,
        outputs=outputs,
        index={s.id: s.index for s in compiled_steps},
    )
