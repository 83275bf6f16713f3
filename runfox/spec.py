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
    inputs:                    # optional; checked when an execution is created
      zip: {type: string, description: postal code}       # required: no default
      count: {type: integer, default: 3}
      mode: {enum: [fast, safe], required: false}
    defaults:                  # optional, applied to steps that do not say
      max_attempts: 3
      retry: {backoff: exponential, delay: 1, max_delay: 60, jitter: 0.2}
      timeout: 30
      on_dependency_failure: fail   # fail | skip | run
    max_parallel: 4            # optional: steps of one execution in progress at once
    steps:
      - id: greet              # unique; letters, digits, _ and -
        fn: make_greeting      # passed to the executor
        depends_on: [other]    # optional: added to those derived from steps.X reads
        produces: [mesh]       # optional: products other steps read as products.mesh
        requires: [coords]     # optional: depends on the producer of coords
        input: {...}           # literals and JSON Logic, resolved at dispatch
        branch:                # optional, first true condition wins
          - condition: {...}
            action: halt | complete | {set: steps.X.status, value: ready}
            result: {...}      # halt payload
        max_attempts: 1
        retry: {on: [TimeoutError, ConnectionError], on_timeout: true}  # and backoff...
        timeout: 30            # seconds per attempt
        on_dependency_failure: skip
        concurrency: {key: gpu, limit: 2}   # at most 2 "gpu" jobs run at once
        cache: {version: 2, max_age: 3600}  # or true: reuse stored outputs (runfox.cache)
      - id: each               # a map step: runs once per item of a JSON list
        fn: process
        map: {var: steps.greet.output.files}   # any expression giving a list
        input: {file: {var: item}, n: {var: index}}
        max_parallel: 10       # optional: items of this map in progress at once
        tolerate: 0.1          # optional: item failures survived (a count, or a fraction)
    outputs: {...}             # resolved when every step is complete

The fields of each part are tables in ``runfox.spec_schema`` (which also builds the
JSON Schema editors use) and the branch actions a table in ``runfox.actions``.
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from . import limits
from .actions import ACTIONS, ActionKind, action_kind, expected_actions
from .cache import CachePolicy
from .errors import ExpressionError, SpecError, SpecProblem, UnknownStepError
from .expressions import Compiled, compile_rule, compile_template, find_refs
from .jsonvalue import json_copy
from .retry import BACKOFFS, RetryPolicy
from .spec_schema import (
    BRANCH_FIELDS,
    CACHE_FIELDS,
    CONCURRENCY_FIELDS,
    DEFAULT_FIELDS,
    DEPENDENCY_POLICIES,
    ERROR_NAME_PATTERN,
    ID_PATTERN,
    INPUT_FIELDS,
    MAX_CONCURRENCY_KEY_LENGTH,
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    PRODUCT_PATTERN,
    RETRY_FIELDS,
    STEP_FIELDS,
    TOP_FIELDS,
    Field,
    check_value,
    names,
)

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_NAME_LENGTH",
    "WORKFLOW_FN_PREFIX",
    "Branch",
    "Concurrency",
    "InputSpec",
    "StepSpec",
    "WorkflowSpec",
    "canonical_json",
    "compile_spec",
    "item_id",
    "item_index",
    "load_spec",
    "parse_yaml",
    "plan_step_id",
    "spec_for",
    "workflow_id_for",
]

_ID_RE = re.compile(ID_PATTERN)
_ERROR_NAME_RE = re.compile(ERROR_NAME_PATTERN)
_STEPS_REF_RE = re.compile(r"^(?:\$\.)?steps\.([A-Za-z0-9_\-]+)")
_PRODUCTS_REF_RE = re.compile(r"^(?:\$\.)?products\.([A-Za-z0-9_\-]+)")
_PRODUCT_RE = re.compile(PRODUCT_PATTERN)
#: A JSONPath (``vars``) that reads steps or products it does not name: ``$.steps.*``,
#: ``$.steps[...]``, ``$..x`` (recursive descent reaches every step).
_WILDCARD_RE = re.compile(r"^\$(?:\.\.|\.(?:steps|products)(?:$|\.\*|\[|\.\.))")
_ITEM_RE = re.compile(r"^(.+)\[(0|[1-9][0-9]*)\]$")


def item_id(step_id: str, index: int) -> str:
    """The id of item ``index`` of map step ``step_id``: ``"step_id[index]"``.

    Brackets cannot occur in a spec's step ids, so an item id never collides with a
    step's.
    """
    return f"{step_id}[{index}]"


def item_index(step_id: str) -> int | None:
    """The item index in an item id (``"x[3]"`` -> 3), ``None`` for a plain step id."""
    if not step_id.endswith("]"):
        return None
    match = _ITEM_RE.match(step_id)
    return int(match.group(2)) if match else None


def plan_step_id(step_id: str) -> str:
    """The spec step an id belongs to: the map step of an item id, else the id itself."""
    if not step_id.endswith("]"):
        return step_id
    match = _ITEM_RE.match(step_id)
    return match.group(1) if match else step_id


@dataclass(frozen=True, slots=True)
class Branch:
    """One branch of a step: ``action`` is ``halt``, ``complete`` or ``set``."""

    index: int
    condition: Compiled
    action: str
    targets: tuple[str, ...] = ()
    result: Compiled | None = None

    @property
    def kind(self) -> ActionKind:
        """The action's kind (``runfox.actions``): how the graph applies it."""
        return action_kind(self.action)


@dataclass(frozen=True, slots=True)
class Concurrency:
    """A step's ``concurrency``: at most ``limit`` jobs with the same key run at once.

    The key is ``literal``, or ``rule`` (JSON Logic, compiled once) evaluated by
    ``key_for`` over ``{"input": <workflow input>, "step_input": <the step's
    resolved input>}`` when the step is claimed.
    """

    limit: int
    literal: str | None = None
    rule: Compiled | None = None

    def key_for(self, workflow_input: Any, step_input: dict[str, Any]) -> str:
        """The key of one job. Raises ``ExpressionError`` when the rule gives no usable key:
        it must give a non-empty string (a number is used as its JSON text) of at most
        ``MAX_CONCURRENCY_KEY_LENGTH`` characters."""
        if self.rule is None:
            return self.literal or ""
        value = self.rule({"input": workflow_input, "step_input": step_input})
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = json.dumps(value)
        if not isinstance(value, str) or not value:
            raise ExpressionError("concurrency.key must give a non-empty string, got "
                                  f"{json.dumps(value, default=repr)[:60]}")
        if len(value) > MAX_CONCURRENCY_KEY_LENGTH:
            raise ExpressionError(f"concurrency.key gave {len(value)} characters; the limit "
                                  f"is {MAX_CONCURRENCY_KEY_LENGTH}")
        return value


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
    #: ``fail``, ``skip`` or ``run``: see ``WorkflowSpec.fatal`` and ``runfox.graph``.
    on_dependency_failure: str = "fail"
    concurrency: Concurrency | None = None
    #: Product names this step makes (``produces``) and needs (``requires``, plus every
    #: ``products.X`` its input and branches read).
    produces: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    #: The step cache (``cache:``), or ``None`` when the step is not cached.
    cache: CachePolicy | None = None
    #: ``map:``: the compiled expression giving the list of items, or ``None`` for a
    #: step that runs once. See ``runfox.graph`` (map steps).
    map: Compiled | None = None
    #: ``max_parallel`` of a map step: items in progress at once (``None``: no bound).
    max_parallel: int | None = None
    #: ``tolerate`` of a map step: an ``int`` is a count of item failures, a ``float``
    #: a fraction (0..1) of the item count.
    tolerate: int | float = 0

    def tolerance(self, total: int) -> int:
        """How many of ``total`` items may fail before this map step fails."""
        if isinstance(self.tolerate, float):
            return math.floor(self.tolerate * total + 1e-9)
        return self.tolerate
    #: A sub-workflow step (``workflow:``): the static name in the spec's ``workflows``
    #: table, or the compiled rule that gives one when the step runs. ``fn`` is then
    #: ``workflow:<name>`` (``workflow:*`` for a rule), a label no executor receives.
    workflow: str | None = None
    workflow_rule: Compiled | None = None

    @property
    def is_subworkflow(self) -> bool:
        """True when the step runs a child workflow instead of a fn."""
        return self.workflow is not None or self.workflow_rule is not None


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One declared workflow input (an entry of the spec's ``inputs:`` block)."""

    name: str
    type: str | None = None
    enum: tuple[Any, ...] | None = None
    required: bool = True
    has_default: bool = False
    default: Any = None
    description: str = ""

    @property
    def schema(self) -> dict[str, Any]:
        """The JSON Schema of the value."""
        schema: dict[str, Any] = {}
        if self.type is not None:
            schema["type"] = self.type
        if self.enum is not None:
            schema["enum"] = list(self.enum)
        return schema

    @property
    def takes_text(self) -> bool:
        """True when the value is a string (declared ``string``, or an enum of strings)."""
        if self.type is not None:
            return self.type == "string"
        return self.enum is not None and all(isinstance(v, str) for v in self.enum)

    def check(self, value: Any) -> list[str]:
        """What is wrong with ``value`` for this input (``expected integer, got "3"``)."""
        return check_value(self.schema, value)


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
    #: The ``inputs:`` block by name, or ``None`` when the spec has none.
    declared_inputs: dict[str, InputSpec] | None = None
    #: At most this many steps of one execution in progress at once (``None``: no limit).
    max_parallel: int | None = None
    #: ``defaults.on_dependency_failure``: stands for the end of the workflow, which
    #: depends on every step that has no dependents.
    end_policy: str = "fail"
    #: True when some failure can be tolerated (a ``skip``/``run`` policy anywhere,
    #: ``end_policy`` included); False keeps the graph on its fail-at-once path.
    tolerant: bool = False
    #: The steps whose failure ends the workflow at once: those with a dependent
    #: whose policy is ``fail``, and those with no dependents when ``end_policy`` is
    #: ``fail``. ``None`` means every step (a plan that is not ``tolerant``).
    fatal: frozenset[str] | None = None
    #: Product name -> the id of the step that produces it.
    producers: dict[str, str] = field(default_factory=dict, repr=False)
    #: True when some step has ``cache`` on (drivers look the cache up only then).
    cached: bool = False
    #: The ``workflows`` table: sub-workflow specs by name (raw, as stored).
    workflows: dict[str, Any] = field(default_factory=dict, repr=False)
    #: True when some step runs a sub-workflow (``workflow:``).
    has_subworkflows: bool = False

    def ends_on_failure(self, step_id: str) -> bool:
        """Whether a failure of ``step_id`` ends the workflow at once."""
        return self.fatal is None or step_id in self.fatal

    def step(self, step_id: str) -> StepSpec:
        return self.by_id[step_id]

    def check_inputs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """``inputs`` checked against the ``inputs:`` block, with defaults filled in.

        Without an ``inputs:`` block every input is accepted as it is. With one,
        every problem is reported at once, each naming its input: a required input
        missing, a value of the wrong type or not in the enum, an input not declared
        (with a did-you-mean). Raises ``SpecError`` (subject "workflow inputs").
        """
        declared = self.declared_inputs
        if declared is None:
            return dict(inputs)
        checked = dict(inputs)
        problems: list[SpecProblem] = []
        for name, decl in declared.items():
            where = f"inputs.{name}"
            if name in inputs:
                problems.extend(SpecProblem(where, m) for m in decl.check(inputs[name]))
            elif decl.has_default:
                checked[name] = json_copy(decl.default)
            elif decl.required:
                about = f" ({decl.description})" if decl.description else ""
                problems.append(SpecProblem(where, f"missing: a required input{about}"))
        for name in inputs:
            if name not in declared:
                known = ", ".join(declared) or "none"
                problems.append(SpecProblem(
                    f"inputs.{name}", f"not a declared input{_suggest(str(name), declared)}; "
                                      f"the spec declares: {known}"))
        if problems:
            raise SpecError(problems, subject="workflow inputs")
        return checked

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

    def ancestors(self, roots: Iterable[str]) -> list[str]:
        """``roots`` and every step they depend on, transitively, in spec order."""
        seen = set(roots)
        frontier = list(seen)
        while frontier:
            for dep in self.by_id[frontier.pop()].depends_on:
                if dep not in seen:
                    seen.add(dep)
                    frontier.append(dep)
        return sorted(seen, key=self.index.__getitem__)

    def known_steps(self, step_ids: Iterable[str], what: str = "step") -> list[str]:
        """``step_ids`` as a list, each checked to be a step of this spec.

        Raises ``UnknownStepError`` naming the first unknown one (with a did-you-mean).
        """
        ids = [step_ids] if isinstance(step_ids, str) else list(step_ids)
        for step_id in ids:
            if step_id not in self.by_id:
                raise UnknownStepError(f"no {what} {step_id!r} in workflow "
                                       f"{self.name or self.workflow_id!r}"
                                       f"{_suggest(str(step_id), self.by_id)}")
        return ids

    def what_invalidates(self, step_id: str) -> list[str]:
        """The step and every step downstream of it (by dependencies, derived ones and
        products included), in spec order: what ``Workflow.invalidate`` reopens."""
        return self.descendants(self.known_steps([step_id]))

    def needed_by(self, targets: Iterable[str]) -> list[str]:
        """The targets and every step they need, in spec order (``run --target``)."""
        return self.ancestors(self.known_steps(targets, "target step"))


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
        if isinstance(key, bool) and isinstance(key_node, yaml.ScalarNode) and \
                not key_node.style:
            key = key_node.value  # YAML 1.1 reads the key `on:` as true; keys are text
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
    A mapping key written as a plain YAML 1.1 boolean (``on``, ``yes``, ``off``...)
    stays the text written, so ``retry: {on: [TimeoutError]}`` reads as meant.
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
    from .subflows import resolve_workflows  # it parses the files this one names

    if isinstance(source, Mapping):
        return spec_for(resolve_workflows(dict(source)))
    if isinstance(source, os.PathLike):
        path = Path(source)
        try:
            _check_size(path.stat().st_size, str(path))
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SpecError([SpecProblem(str(path), f"cannot read: {exc.strerror}")]) from exc
        raw = resolve_workflows(parse_yaml(text, str(path)), path.parent, source=str(path))
        return spec_for(raw, source=str(path))
    return spec_for(resolve_workflows(parse_yaml(source)))


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
    _check_keys(problems, where, raw, names(RETRY_FIELDS))
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
    before = len(problems.items)
    on = _parse_error_names(problems, f"{where}.on", raw.get("on"))
    ok = ok and len(problems.items) == before
    on_timeout = raw.get("on_timeout", True)
    if not isinstance(on_timeout, bool):
        problems.add(f"{where}.on_timeout", f"must be true or false, got {on_timeout!r}")
        ok = False
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
    return RetryPolicy(backoff, values["delay"], values["max_delay"], float(jitter), on,
                       on_timeout)


def _parse_error_names(problems: _Problems, where: str, raw: Any) -> tuple[str, ...] | None:
    """``retry.on``: a non-empty list of exception class names (problems reported)."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        problems.add(where, "must be a non-empty list of error type names such as "
                            f"[TimeoutError, ConnectionError], got {raw!r}")
        return None
    for i, name in enumerate(raw):
        if not isinstance(name, str) or not _ERROR_NAME_RE.fullmatch(name):
            problems.add(f"{where}[{i}]", "must be an error type name (TimeoutError or "
                                          f"package.module.Class), got {name!r}")
    return tuple(raw)


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


#: What a concurrency key rule may read: ``var`` paths and JSONPath (``vars``) roots.
_KEY_ROOTS = ("input", "step_input")
_KEY_JSONPATH_RE = re.compile(r"^\$(?:\.|\[['\"])(input|step_input)(?:$|[.\['\"])")


def _parse_concurrency(problems: _Problems, where: str, raw: Any) -> Concurrency | None:
    """``concurrency: {key, limit}``; the key is a string or a JSON Logic rule."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.add(where, "must be a mapping such as {key: gpu, limit: 2}")
        return None
    before = len(problems.items)
    _check_fields(problems, where, raw, CONCURRENCY_FIELDS)
    key: Any = raw.get("key")
    limit: Any = raw.get("limit")
    if "limit" in raw and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        problems.add(f"{where}.limit", f"must be an integer >= 1, got {limit!r}")
    literal, rule = None, None
    if isinstance(key, str):
        if not key:
            problems.add(f"{where}.key", "must not be empty")
        elif len(key) > MAX_CONCURRENCY_KEY_LENGTH:
            problems.add(f"{where}.key", f"is {len(key)} characters long; the limit is "
                                         f"{MAX_CONCURRENCY_KEY_LENGTH}")
        literal = key
    elif isinstance(key, dict):
        rule = _compile(problems, f"{where}.key", key, template=False)
        for kind, path in find_refs(key):
            root = path.split(".", 1)[0] if kind == "var" else None
            if (root not in _KEY_ROOTS if kind == "var"
                    else not _KEY_JSONPATH_RE.match(path)):
                problems.add(f"{where}.key", f"reads {path!r}; a key may read only "
                                             "input.X (the workflow input) and step_input.X "
                                             "(the step's resolved input)")
    elif key is not None:
        problems.add(f"{where}.key", f"must be a string or a JSON Logic rule, got {key!r}")
    if len(problems.items) > before:
        return None
    return Concurrency(limit, literal, rule)


def _parse_cache(problems: _Problems, where: str, raw: Any, inherited: CachePolicy | None
                 ) -> CachePolicy | None:
    """``cache: true | false | {version, max_age}``. ``true`` takes ``inherited`` (the
    defaults' settings) or none; a mapping fills what it leaves out from ``inherited``."""
    if raw is None or raw is False:
        return None
    if raw is True:
        return inherited or CachePolicy()
    if not isinstance(raw, dict):
        problems.add(where, f"must be true, false or a mapping such as {{version: 2, "
                            f"max_age: 3600}}, got {raw!r}")
        return None
    before = len(problems.items)
    _check_fields(problems, where, raw, CACHE_FIELDS)
    if len(problems.items) > before:
        return None
    base = inherited or CachePolicy()
    version = raw.get("version", base.version)
    if isinstance(version, float):
        version = int(version)  # 2.0 is the integer 2 to JSON; keys must agree
    max_age = raw.get("max_age")
    return CachePolicy(version, float(max_age) if max_age is not None else base.max_age)


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


def _step_refs(value: Any, *, template: bool, root: str = "steps") -> list[str]:
    """Step ids named by ``steps.X`` paths inside a rule or template (``root="products"``:
    product names read as ``products.X``)."""
    found = []
    pattern = _STEPS_REF_RE if root == "steps" else _PRODUCTS_REF_RE
    for kind, path in find_refs(value, template=template):
        if kind == "var":
            parts = path.split(".")
            if len(parts) >= 2 and parts[0] == root:
                found.append(parts[1])
        else:
            match = pattern.match(path)
            if match and match.group(1) != "*":
                found.append(match.group(1))
    return found


def _wildcards(value: Any, *, template: bool) -> list[str]:
    """Paths that read steps or products without naming them (``$.steps.*``, ``$..x``,
    ``{"var": "steps"}``): no dependency can be derived from them."""
    return [path for kind, path in find_refs(value, template=template)
            if (path in ("steps", "products") if kind == "var" else _WILDCARD_RE.match(path))]


def _reads(step: dict[str, Any]) -> list[tuple[Any, bool]]:
    """The expressions a step evaluates: its input (a template), its branches' conditions
    (rules) and results (templates)."""
    found: list[tuple[Any, bool]] = []
    if isinstance(step.get("workflow"), dict):
        found.append((step["workflow"], True))
    raw_input = step.get("input")
    if isinstance(raw_input, dict):
        found.extend((value, True) for value in raw_input.values())
    if step.get("map") is not None:
        found.append((step["map"], True))
    branches = step.get("branch")
    if isinstance(branches, list):
        for entry in branches:
            if isinstance(entry, dict):
                found.append((entry.get("condition", False), False))
                if "result" in entry:
                    found.append((entry["result"], True))
    return found


def _derive_deps(problems: _Problems, place: str, sid: str, step: Any,
                 explicit: tuple[str, ...], known: set[str], products: _Products
                 ) -> tuple[str, ...]:
    """A step's dependencies: ``depends_on``, then every step its input and branches read
    (``steps.X``), then the producers of what it requires (``requires``, ``products.X``).

    A wildcard read (``$.steps.*``) derives nothing; in a step without ``depends_on``
    it is an error, as the step would otherwise run before the steps it reads.
    """
    if not isinstance(step, dict):
        return explicit
    found = list(explicit)
    for value, template in _reads(step):
        try:
            refs = _step_refs(value, template=template)
            wild = _wildcards(value, template=template)
        except (ExpressionError, TypeError, ValueError, RecursionError):
            continue  # malformed: reported where it is compiled
        found.extend(ref for ref in refs if ref in known and ref != sid)
        if wild and step.get("depends_on") is None:
            problems.add(place, f"reads {wild[0]!r}, a wildcard from which no dependency can "
                                "be derived; list the steps it needs in depends_on")
    for name in products.requires.get(sid, ()):
        producer = products.producers.get(name)
        if producer is not None and producer[0] != sid:
            found.append(producer[0])
    return tuple(dict.fromkeys(found))


class _Products:
    """``produces``/``requires`` of every step, checked; a product has one producer."""

    def __init__(self, problems: _Problems, raw_steps: list[Any], ids: list[str | None],
                 places: list[str]) -> None:
        self.problems = problems
        #: name -> (producing step id, the place it is declared)
        self.producers: dict[str, tuple[str, str]] = {}
        self.produces: dict[str, tuple[str, ...]] = {}
        self.requires: dict[str, tuple[str, ...]] = {}
        declared: list[tuple[int, list[tuple[str, str]]]] = []
        for i, step in enumerate(raw_steps):
            if not isinstance(step, dict):
                continue
            sid = ids[i]
            made = self._names(f"{places[i]}.produces", step.get("produces"))
            for name, where in made:
                first = self.producers.get(name)
                if first is not None:
                    problems.add(where, f"product {name!r} is also produced by {first[1]}; "
                                        "a product has one producer")
                elif sid is not None:
                    self.producers[name] = (sid, where)
            if sid is not None:
                self.produces[sid] = tuple(name for name, _ in made)
            declared.append((i, self._names(f"{places[i]}.requires", step.get("requires"))))
        for i, needed in declared:
            sid = ids[i]
            names_read = [(name, f"{places[i]}.requires[{j}]")
                          for j, (name, _) in enumerate(needed)]
            step = raw_steps[i]
            for value, template in _reads(step):
                try:
                    names_read.extend((name, f"{places[i]} (reads products.{name})")
                                      for name in _step_refs(value, template=template,
                                                             root="products"))
                except (ExpressionError, TypeError, ValueError, RecursionError):
                    continue
            required: list[str] = []
            for name, where in names_read:
                producer = self.producers.get(name)
                if producer is None:
                    if where.endswith("]"):  # a products.X read is reported by _Refs
                        problems.add(where, self.unknown(name))
                elif producer[0] == sid and where.endswith("]"):
                    problems.add(where, f"requires {name!r}, which it produces itself "
                                        f"({producer[1]})")
                elif name not in required:
                    required.append(name)
            if sid is not None:
                self.requires[sid] = tuple(required)

    def unknown(self, name: str) -> str:
        made = ", ".join(sorted(self.producers)) or "none"
        return (f"no step produces {name!r}{_suggest(name, self.producers)}; the products "
                f"are: {made}")

    def _names(self, where: str, raw: Any) -> list[tuple[str, str]]:
        """A ``produces``/``requires`` list: ``(name, place)`` for each good entry."""
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.problems.add(where, "must be a list of product names")
            return []
        found: list[tuple[str, str]] = []
        for j, name in enumerate(raw):
            place = f"{where}[{j}]"
            if not isinstance(name, str) or not _PRODUCT_RE.fullmatch(name) or \
                    len(name) > MAX_ID_LENGTH:
                self.problems.add(place, f"{name!r} is not a product name (letters, digits, "
                                         "'_' and '-', as a step id)")
            elif any(name == seen for seen, _ in found):
                self.problems.add(place, f"{name!r} is listed twice")
            else:
                found.append((name, place))
        return found

    def of(self, sid: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """``(produces, requires)`` of one step."""
        if sid is None:
            return (), ()
        return self.produces.get(sid, ()), self.requires.get(sid, ())


def _dict_template(compiled: dict[str, Compiled | None]) -> Compiled:
    """One compiled function for a mapping of names to compiled templates."""
    parts = [(k, c) for k, c in compiled.items() if c is not None]
    return lambda data: {k: c(data) for k, c in parts}



def _check_fields(problems: _Problems, where: str, data: Mapping[str, Any],
                  fields: tuple[Field, ...]) -> None:
    """The table-driven checks of one part: unknown and missing fields, ``checked`` values."""
    _check_keys(problems, where, data, names(fields))
    for f in fields:
        place = f"{where}.{f.name}" if where else f.name
        value = data.get(f.name)
        if f.required and (f.name not in data or (value is None and f.schema)):
            problems.add(where or f.name, f"missing {f.name!r} ({f.description})")
        elif f.checked and f.name in data and not (value is None and f.nullable):
            for message in check_value(f.schema, value):
                problems.add(place, message)


class _Refs:
    """The step graph as far as it is known, for checking ``steps.X`` references."""

    def __init__(self, problems: _Problems, known: set[str],
                 deps: dict[str, tuple[str, ...]], cycle: list[str] | None,
                 producers: Mapping[str, tuple[str, str]] | None = None) -> None:
        self.problems = problems
        self.known = known
        self.deps = deps
        self.cycle = cycle
        self.producers = producers or {}
        self.memo: dict[str, set[str]] = {}

    def check(self, where: str, owner: str | None, value: Any, *, template: bool,
              allow_self: bool) -> None:
        """Every ``steps.X`` in ``value`` names a step upstream of ``owner`` (any if None),
        every ``products.X`` a product some step makes (its producer is upstream: derived)."""
        for name in _step_refs(value, template=template, root="products"):
            producer = self.producers.get(name)
            if producer is None:
                made = ", ".join(sorted(self.producers)) or "none"
                self.problems.add(where, f"refers to products.{name}, but no step produces "
                                         f"{name!r}{_suggest(name, self.producers)}; the "
                                         f"products are: {made}")
            elif producer[0] == owner and not allow_self:
                self.problems.add(where, f"refers to products.{name}, which {owner!r} produces "
                                         f"itself ({producer[1]})")
        for ref in _step_refs(value, template=template):
            if ref not in self.known:
                self.problems.add(where, f"refers to steps.{ref}, but there is no step {ref!r}"
                                         f"{_suggest(ref, self.known)}")
            elif owner is None or (allow_self and ref == owner):
                continue
            elif self.cycle is None and not _is_upstream(ref, owner, self.deps, self.memo):
                self.problems.add(
                    where,
                    f"refers to steps.{ref}, which is not upstream of {owner!r}; "
                    f"add {ref!r} to depends_on",
                )


@dataclass(frozen=True, slots=True)
class _StepDefaults:
    max_attempts: int | None = None
    retry: RetryPolicy | None = None
    timeout: float | None = None
    on_dependency_failure: str = "fail"
    concurrency: Concurrency | None = None
    cache: CachePolicy | None = None


def _compile_name(problems: _Problems, raw: dict[str, Any]) -> str:
    name = raw.get("name", "")
    if not isinstance(name, str):
        problems.add("name", f"must be a string, got {name!r}")
        return ""
    if len(name) > MAX_NAME_LENGTH:
        problems.add("name", f"the name is {len(name)} characters long; the limit is "
                             f"{MAX_NAME_LENGTH} (what SQL backends can store)")
        return ""
    return name


def _compile_defaults(problems: _Problems, raw: Any) -> _StepDefaults:
    if raw is None:
        return _StepDefaults()
    if not isinstance(raw, dict):
        problems.add("defaults", "must be a mapping")
        return _StepDefaults()
    _check_fields(problems, "defaults", raw, DEFAULT_FIELDS)
    return _StepDefaults(
        _parse_attempts(problems, "defaults.max_attempts", raw.get("max_attempts")),
        _parse_retry(problems, "defaults.retry", raw.get("retry")),
        _parse_timeout(problems, "defaults.timeout", raw.get("timeout")),
        _policy(raw.get("on_dependency_failure")) or "fail",
        concurrency=_parse_concurrency(problems, "defaults.concurrency",
                                       raw.get("concurrency")),
        cache=_parse_cache(problems, "defaults.cache", raw.get("cache"), None),
    )


def _compile_inputs(problems: _Problems, raw: Any) -> dict[str, InputSpec] | None:
    """The ``inputs:`` block: ``None`` when there is none (any inputs are accepted)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.add("inputs", "must be a mapping of input name to {type, required, "
                               "default, description}")
        return None
    declared: dict[str, InputSpec] = {}
    for name, decl in raw.items():
        where = f"inputs.{name}"
        if not isinstance(decl, dict):
            problems.add(where, "must be a mapping such as {type: string, required: true}")
            continue
        before = len(problems.items)
        _check_fields(problems, where, decl, INPUT_FIELDS)
        if len(problems.items) > before:
            continue
        spec = InputSpec(
            name=name, type=decl.get("type"),
            enum=tuple(decl["enum"]) if "enum" in decl else None,
            required=decl.get("required", "default" not in decl),
            has_default="default" in decl, default=decl.get("default"),
            description=decl.get("description") or "",
        )
        if spec.has_default:
            for message in spec.check(spec.default):
                problems.add(f"{where}.default", message)
            if decl.get("required") is True:
                problems.add(where, "required and has a default: the default would never "
                                    "be used; drop one")
        declared[name] = spec
    return declared


def _steps_list(problems: _Problems, raw: dict[str, Any]) -> list[Any]:
    steps = raw.get("steps")
    if steps is None:  # reported by the field table
        return []
    if not isinstance(steps, list) or not steps:
        problems.add("steps", "must be a non-empty list of steps")
        return []
    return steps


def _step_ids(problems: _Problems, raw_steps: list[Any]
              ) -> tuple[list[str | None], list[str]]:
    """Pass 1: each step's id (``None`` when unusable) and its place for messages."""
    ids: list[str | None] = []
    places: list[str] = []
    seen: dict[str, int] = {}
    for i, step in enumerate(raw_steps):
        place = f"steps[{i}]"
        sid = step.get("id") if isinstance(step, dict) else None
        if not isinstance(step, dict):
            problems.add(place, f"a step must be a mapping, got {type(step).__name__}")
        elif sid is None:
            pass  # reported with the step's other fields
        elif not isinstance(sid, str) or not _ID_RE.fullmatch(sid):
            problems.add(f"{place}.id", f"{sid!r} is not a valid step id (letters, digits, "
                                        "'_' and '-'; no '.', '#' or spaces)")
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
        ids.append(sid)
        places.append(place)
    return ids, places


def _step_deps(problems: _Problems, place: str, sid: str | None, raw: Any,
               known: set[str]) -> tuple[str, ...]:
    """Pass 2: one step's ``depends_on``, every entry checked."""
    if raw is None:
        return ()
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        problems.add(f"{place}.depends_on", "must be a list of step ids")
        return ()
    clean: list[str] = []
    for j, dep in enumerate(raw):
        where = f"{place}.depends_on[{j}]"
        if not isinstance(dep, str):
            problems.add(where, f"must be a step id, got {dep!r}")
        elif dep not in known:
            problems.add(where, f"unknown step {dep!r}{_suggest(dep, known)}")
        elif dep == sid:
            problems.add(where, "a step cannot depend on itself")
        elif dep in clean:
            problems.add(where, f"{dep!r} is listed twice")
        else:
            clean.append(dep)
    return tuple(clean)


def _compile_branch(problems: _Problems, where: str, index: int, sid: str | None, entry: Any,
                    refs: _Refs) -> Branch | None:
    """One ``branch`` entry; the action is parsed by its kind in ``runfox.actions``."""
    if not isinstance(entry, dict):
        problems.add(where, "must be a mapping with 'condition' and 'action'")
        return None
    _check_fields(problems, where, entry, BRANCH_FIELDS)
    condition = _compile(problems, f"{where}.condition", entry.get("condition", False),
                         template=False)
    refs.check(f"{where}.condition", sid, entry.get("condition"), template=False,
               allow_self=True)
    action = entry.get("action")
    kind = next((k for k in ACTIONS if k.matches(action)), None)
    targets: tuple[str, ...] = ()
    if kind is not None:
        targets = kind.parse(action, f"{where}.action", problems.add)
        for target in targets:
            if target not in refs.known:
                problems.add(f"{where}.action.set",
                             f"no step {target!r} to reset{_suggest(target, refs.known)}")
    elif action is not None:
        problems.add(f"{where}.action",
                     f"unknown action {action!r}; expected {expected_actions()}")
    result = None
    if "result" in entry:
        result = _compile(problems, f"{where}.result", entry["result"], template=True)
        refs.check(f"{where}.result", sid, entry["result"], template=True, allow_self=True)
    if kind is None or condition is None:
        return None
    return Branch(index, condition, kind.name, targets, result)


def _compile_branches(problems: _Problems, place: str, sid: str | None, raw: Any,
                      refs: _Refs) -> tuple[Branch, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.add(f"{place}.branch", "must be a list of {condition, action} entries")
        return ()
    branches = [_compile_branch(problems, f"{place}.branch[{j}]", j, sid, entry, refs)
                for j, entry in enumerate(raw)]
    kinds = [action_kind(b.action) for b in branches if b is not None]
    if any(k.loops for k in kinds) and not any(k.exits for k in kinds):
        loops = " or ".join(k.name for k in ACTIONS if k.loops)
        exits = " or ".join(k.name for k in ACTIONS if k.exits)
        problems.add(f"{place}.branch",
                     f"a step with a {loops} (loop) branch also needs a {exits} branch, "
                     "or the loop can never end")
    return tuple(b for b in branches if b is not None)


def _compile_step(problems: _Problems, place: str, sid: str | None, step: dict[str, Any],
                  deps: tuple[str, ...], refs: _Refs, defaults: _StepDefaults,
                  products: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
                  ) -> StepSpec | None:
    """Pass 3: one step's fields, expressions and policies."""
    _check_fields(problems, place, step, STEP_FIELDS)
    fn = step.get("fn")
    if fn is not None and (not isinstance(fn, str) or not fn):
        problems.add(f"{place}.fn", f"must be a non-empty string, got {fn!r}")
    elif isinstance(fn, str) and fn.startswith(WORKFLOW_FN_PREFIX):
        problems.add(f"{place}.fn", f"{fn!r}: names starting {WORKFLOW_FN_PREFIX!r} are kept "
                                    "for sub-workflow steps (write workflow: instead)")
    workflow, workflow_rule = _compile_workflow_field(problems, place, sid, step, refs)
    if "fn" in step and "workflow" in step:
        problems.add(place, "has both fn and workflow; a step runs a fn or a sub-workflow, "
                            "not both")
    elif "fn" not in step and "workflow" not in step:
        problems.add(place, "missing 'fn' (the function name passed to the executor) or "
                            "'workflow' (a sub-workflow to run)")
    if "workflow" in step and "fn" not in step and (workflow or workflow_rule):
        fn = WORKFLOW_FN_PREFIX + (workflow or "*")
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
        refs.check(where, sid, value, template=True, allow_self=False)
    attempts = _parse_attempts(problems, f"{place}.max_attempts", step.get("max_attempts"))
    retry = _parse_retry(problems, f"{place}.retry", step.get("retry"))
    timeout = _parse_timeout(problems, f"{place}.timeout", step.get("timeout"))
    concurrency = _parse_concurrency(problems, f"{place}.concurrency", step.get("concurrency"))
    cache = (defaults.cache if step.get("cache") is None
             else _parse_cache(problems, f"{place}.cache", step["cache"], defaults.cache))
    branches = _compile_branches(problems, place, sid, step.get("branch"), refs)
    mapped = _compile_map(problems, place, sid, step, refs)
    if sid is None or not isinstance(fn, str) or not fn:
        return None
    return StepSpec(
        id=sid, index=0, fn=fn, depends_on=deps, dependents=(),
        inputs=_dict_template(inputs), branches=branches,
        max_attempts=attempts or defaults.max_attempts or 1,
        retry=retry or defaults.retry or RetryPolicy(),
        timeout=timeout if timeout is not None else defaults.timeout,
        on_dependency_failure=(_policy(step.get("on_dependency_failure"))
                               or defaults.on_dependency_failure),
        concurrency=concurrency or defaults.concurrency,
        produces=products[0], requires=products[1],
        cache=cache if mapped[0] is None else None,  # a map step is never cached
        map=mapped[0], max_parallel=mapped[1], tolerate=mapped[2],
        workflow=workflow, workflow_rule=workflow_rule,
    )


def _item_vars(value: Any) -> list[str]:
    """Which of ``item`` and ``index`` an expression reads (none when it is malformed:
    that is reported where it is compiled)."""
    try:
        roots = {path.split(".", 1)[0] for kind, path in find_refs(value, template=True)
                 if kind == "var" and isinstance(path, str)}
    except (ExpressionError, TypeError, ValueError, RecursionError):
        return []
    return sorted(roots & {"item", "index"})


def _compile_map(problems: _Problems, place: str, sid: str | None, step: dict[str, Any],
                 refs: _Refs) -> tuple[Compiled | None, int | None, int | float]:
    """``map``, ``max_parallel`` and ``tolerate`` of one step (problems reported).

    ``max_parallel`` and ``tolerate`` belong to map steps only; a map step may not
    have ``branch`` (its output is a list, not an object a branch could read) nor
    ``cache``. ``tolerate`` is a count (an integer >= 0) or a fraction (a number
    with a decimal point, 0..1) of the items.
    """
    raw = step.get("map")
    limit = step.get("max_parallel")
    tolerate = step.get("tolerate")
    if raw is None:
        for name in ("max_parallel", "tolerate"):
            if step.get(name) is not None:
                problems.add(f"{place}.{name}", "applies to map steps only (add 'map')")
        raw_input = step.get("input")
        for key, value in (raw_input.items() if isinstance(raw_input, dict) else ()):
            for name in _item_vars(value):
                problems.add(f"{place}.input.{key}", f"reads {{var: {name}}}, which only a map "
                                                     "step has (add 'map')")
    if isinstance(step.get("workflow"), dict):
        # The child's name is resolved once per claim of the step, before any item exists.
        for name in _item_vars(step["workflow"]):
            problems.add(f"{place}.workflow", f"reads {{var: {name}}}: a map step's sub-workflow "
                                              "is chosen once for all its items (pass per-item "
                                              "values in 'input')")
    if raw is None:
        return None, None, 0
    compiled = _compile(problems, f"{place}.map", raw, template=True)
    refs.check(f"{place}.map", sid, raw, template=True, allow_self=False)
    for name in ("branch", "cache"):
        if step.get(name) not in (None, False):
            problems.add(f"{place}.{name}", f"a map step cannot have {name!r} (its output is "
                                            "the list of its items' outputs)")
    if limit is not None and (type(limit) is not int or limit < 1):
        problems.add(f"{place}.max_parallel", f"must be an integer >= 1, got {limit!r}")
        limit = None
    share: int | float = 0
    if tolerate is not None:
        count = type(tolerate) is int and tolerate >= 0
        if count or (type(tolerate) is float and 0.0 <= tolerate <= 1.0):
            share = tolerate
        else:
            problems.add(f"{place}.tolerate", "must be a count of items (an integer >= 0) or "
                                              f"a fraction of them (0.0 to 1.0), got "
                                              f"{tolerate!r}")
    return compiled, limit, share


#: The ``fn`` of a sub-workflow step's job: ``workflow:<name>``. No executor gets one.
WORKFLOW_FN_PREFIX = "workflow:"


def _compile_workflow_field(problems: _Problems, place: str, sid: str | None,
                            step: dict[str, Any], refs: _Refs
                            ) -> tuple[str | None, Compiled | None]:
    """A step's ``workflow``: a static name, or a JSON Logic rule giving one."""
    raw = step.get("workflow")
    if raw is None:
        if "workflow" in step:
            problems.add(f"{place}.workflow", "must be a workflow name or a JSON Logic rule, "
                                              "got null")
        return None, None
    if isinstance(raw, str) and raw:
        return raw, None
    if isinstance(raw, dict) and raw:
        refs.check(f"{place}.workflow", sid, raw, template=True, allow_self=False)
        return None, _compile(problems, f"{place}.workflow", raw, template=True)
    problems.add(f"{place}.workflow", f"must be a workflow name or a JSON Logic rule, got "
                                      f"{raw!r}")
    return None, None


def _policy(raw: Any) -> str | None:
    """An ``on_dependency_failure`` value (checked by its field table), or ``None``."""
    return raw if isinstance(raw, str) and raw in DEPENDENCY_POLICIES else None


def _compile_outputs(problems: _Problems, raw: Any, refs: _Refs) -> Compiled:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.add("outputs", "must be a mapping of output name to value")
        raw = {}
    compiled = {}
    for key, value in raw.items():
        compiled[key] = _compile(problems, f"outputs.{key}", value, template=True)
        refs.check(f"outputs.{key}", None, value, template=True, allow_self=False)
    return _dict_template(compiled)


def _link(steps: list[StepSpec]) -> tuple[StepSpec, ...]:
    """Number the compiled steps and fill in each one's dependents."""
    dependents: dict[str, list[str]] = {s.id: [] for s in steps}
    for s in steps:
        for dep in s.depends_on:
            if dep in dependents:
                dependents[dep].append(s.id)
    return tuple(replace(s, index=i, dependents=tuple(dependents[s.id]))
                 for i, s in enumerate(steps))


def compile_spec(
    raw: dict[str, Any], *, source: str | None = None, workflow_id: str | None = None,
    _within: frozenset[str] | None = None,
) -> WorkflowSpec:
    """Validate ``raw`` completely and compile it. Raises ``SpecError`` listing every problem.

    Each part has its own function (name, defaults, inputs, step ids, dependencies,
    steps with their branches, outputs); all report into one list of problems, so
    every problem is found in one pass.
    """
    problems = _Problems()
    if not isinstance(raw, dict):
        raise SpecError(
            [SpecProblem("", f"a workflow spec must be a mapping, got {type(raw).__name__}")],
            source=source,
        )
    _check_json(problems, "spec", raw)
    if problems.items:  # non-JSON values would break everything below; report them now
        _check_keys(problems, "", raw, names(TOP_FIELDS))
        raise SpecError(problems.items, source=source)
    raw = json_copy(raw)  # compiled specs are shared and cached: never alias the caller's dict
    _check_fields(problems, "", raw, TOP_FIELDS)
    name = _compile_name(problems, raw)
    defaults = _compile_defaults(problems, raw.get("defaults"))
    declared = _compile_inputs(problems, raw.get("inputs"))
    raw_steps = _steps_list(problems, raw)

    ids, places = _step_ids(problems, raw_steps)
    known = {sid for sid in ids if sid is not None}
    deps = {sid: _step_deps(problems, places[i], sid, raw_steps[i].get("depends_on"), known)
            for i, sid in enumerate(ids) if sid is not None}
    for i, step in enumerate(raw_steps):  # an unusable id still has its depends_on checked
        if ids[i] is None and isinstance(step, dict):
            _step_deps(problems, places[i], None, step.get("depends_on"), known)
    products = _Products(problems, raw_steps, ids, places)
    for i, sid in enumerate(ids):
        if sid is not None:
            deps[sid] = _derive_deps(problems, places[i], sid, raw_steps[i], deps[sid], known,
                                     products)
    cycle = _find_cycle([sid for sid in ids if sid is not None], deps)
    if cycle:
        problems.add("steps", "dependency cycle: " + " -> ".join(cycle))
    refs = _Refs(problems, known, deps, cycle, products.producers)

    compiled = [_compile_step(problems, places[i], ids[i], step, deps.get(ids[i] or "", ()),
                              refs, defaults, products.of(ids[i]))
                for i, step in enumerate(raw_steps) if isinstance(step, dict)]
    outputs = _compile_outputs(problems, raw.get("outputs"), refs)
    from .subflows import check_workflows  # the table, its cycles and depth

    table = check_workflows(problems, raw, dict(zip(ids, places, strict=True)), compiled,
                            _within)

    if problems.items:
        raise SpecError(problems.items, source=source)
    steps = _link([s for s in compiled if s is not None])
    max_parallel = raw.get("max_parallel")
    return WorkflowSpec(
        raw=raw,
        workflow_id=workflow_id or workflow_id_for(raw),
        name=name,
        steps=steps,
        by_id={s.id: s for s in steps},
        outputs=outputs,
        index={s.id: s.index for s in steps},
        declared_inputs=declared,
        max_parallel=int(max_parallel) if max_parallel is not None else None,
        producers={name: place[0] for name, place in products.producers.items()},
        cached=any(s.cache is not None for s in steps),
        workflows=table,
        has_subworkflows=any(s.is_subworkflow for s in steps),
        **_failure_plan(steps, defaults.on_dependency_failure),
    )


def _failure_plan(steps: tuple[StepSpec, ...], end_policy: str) -> dict[str, Any]:
    """``end_policy``, ``tolerant`` and ``fatal`` of a ``WorkflowSpec`` (see there)."""
    by_id = {s.id: s for s in steps}
    tolerant = end_policy != "fail" or any(s.on_dependency_failure != "fail" for s in steps)
    if not tolerant:
        return {"end_policy": end_policy, "tolerant": False, "fatal": None}
    fatal = frozenset(
        s.id for s in steps
        if (end_policy == "fail" if not s.dependents else
            any(by_id[d].on_dependency_failure == "fail" for d in s.dependents)))
    return {"end_policy": end_policy, "tolerant": True, "fatal": fatal}
