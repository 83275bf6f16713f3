"""Sub-workflows in specs: the ``workflows`` table, where its entries come from, and
what the compiler checks about it.

A step with ``workflow: <name>`` (instead of ``fn``) runs another workflow as a child
execution on the same backend; its ``input`` becomes the child's workflow inputs and
the child's outcome becomes the step's output. ``workflow`` may also be a JSON Logic
rule that gives the name when the step runs.

Records must be self-contained: a worker on another host cannot read the files of
the process that submitted a workflow. So every spec a workflow may start is kept
in its top-level ``workflows`` table (``{name: spec}``), and that table travels in
the stored spec, to children too (a child's spec is its entry plus the same table,
so grandchildren resolve). When a spec is loaded (``load_spec``, ``Workflow.from_*``,
``runfox run``), ``resolve_workflows`` fills the table in for every static name not
in it yet, transitively:

- a name that is a file path (``child.yaml``, relative to the directory of the file
  that names it; the working directory for specs that are not files) is read;
- otherwise a name given to ``register_workflow`` in this process is used.

A name found neither way stays unknown and the compiler refuses it. The table is
one flat namespace: a nested table in a loaded file is merged into it.

The compiler (``check_workflows``) refuses a static name missing from the table,
compiles every entry (problems are reported under ``workflows['name']...``), and
refuses a cycle of static references or a chain deeper than
``limits.workflow_depth`` (default 8), naming the chain.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import limits
from .errors import SpecError, SpecProblem
from .jsonvalue import json_copy

if TYPE_CHECKING:
    from .spec import StepSpec, WorkflowSpec, _Problems

__all__ = [
    "child_execution_id",
    "child_spec",
    "register_workflow",
    "registered_workflows",
    "resolve_workflows",
    "unregister_workflow",
]

_FILE_SUFFIXES = (".yaml", ".yml", ".json")
_registered: dict[str, tuple[dict[str, Any], Path | None]] = {}
_lock = threading.Lock()


def register_workflow(name: str, spec: Mapping[str, Any] | str | os.PathLike[str] | WorkflowSpec
                      ) -> None:
    """Make ``name`` usable as ``workflow: name`` in specs loaded by this process.

    ``spec`` is a spec mapping, a compiled ``WorkflowSpec``, or the path of a YAML
    (or JSON) file, read now; file paths its own steps name are relative to its
    directory. Registering a name again replaces it. The spec is copied into each
    workflow's ``workflows`` table when that workflow is loaded, so workers never
    need the registration.

    Raises:
        ValueError: ``name`` is empty or not a string.
        SpecError: the file cannot be read or parsed.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a workflow name must be a non-empty string, got {name!r}")
    base: Path | None = None
    if isinstance(spec, Mapping):
        raw = json_copy(dict(spec), f"workflow {name!r}")
    elif isinstance(spec, str | os.PathLike):
        path = Path(spec)
        raw, base = _read(path), path.parent
    else:  # a compiled spec
        raw = json_copy(spec.raw, f"workflow {name!r}")
    with _lock:
        _registered[name] = (raw, base)


def unregister_workflow(name: str) -> None:
    """Forget a name given to ``register_workflow`` (nothing happens if it was not)."""
    with _lock:
        _registered.pop(name, None)


def registered_workflows() -> list[str]:
    """The names given to ``register_workflow`` in this process, sorted."""
    with _lock:
        return sorted(_registered)


def _read(path: Path) -> dict[str, Any]:
    from .spec import parse_yaml  # spec imports this module

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError([SpecProblem(str(path), f"cannot read: {exc.strerror}")]) from exc
    return parse_yaml(text, str(path))


def _find(name: str, here: Path | None) -> tuple[dict[str, Any], Path | None] | None:
    """The spec a static name stands for: a file next to the naming spec, else a
    registered name; ``None`` when it is neither."""
    if name.endswith(_FILE_SUFFIXES):
        path = Path(name) if Path(name).is_absolute() else (here or Path.cwd()) / name
        if path.is_file():
            return _read(path), path.parent
    with _lock:
        found = _registered.get(name)
    if found is None:
        return None
    return json_copy(found[0]), found[1]


def resolve_workflows(raw: dict[str, Any], base: Path | None = None, *,
                      source: str | None = None) -> dict[str, Any]:
    """``raw`` with every static sub-workflow name it reaches put into its ``workflows``.

    ``base`` is the directory of the file ``raw`` came from (paths are relative to
    it; the working directory when ``None``). Names already in the table are kept
    as they are; names found nowhere are left for the compiler to refuse. Returns
    ``raw`` itself when there is nothing to add.

    Raises ``SpecError`` when two files define different specs under one name, or a
    file cannot be read or parsed.
    """
    if not isinstance(raw, dict):
        return raw
    given = raw.get("workflows")
    if given is not None and not isinstance(given, dict):
        return raw  # the compiler says what is wrong with it
    table: dict[str, Any] = dict(given or {})
    todo: list[tuple[Any, Path | None]] = [(raw, base)]
    todo.extend((entry, base) for entry in table.values())
    added = False
    while todo:
        spec, here = todo.pop()
        steps = spec.get("steps") if isinstance(spec, dict) else None
        if not isinstance(steps, list):
            continue
        for step in steps:
            name = step.get("workflow") if isinstance(step, dict) else None
            if not isinstance(name, str) or not name or name in table:
                continue
            found = _find(name, here)
            if found is None:
                continue
            child, child_base = found
            nested = child.pop("workflows", None)
            table[name] = child
            added = True
            todo.append((child, child_base))
            for key, entry in (nested.items() if isinstance(nested, dict) else ()):
                if key in table and table[key] != entry:
                    raise SpecError([SpecProblem(f"workflows[{key!r}]",
                                                 f"two different specs are named {key!r} "
                                                 f"(one in {name!r}); rename one")],
                                    source=source)
                if key not in table:
                    table[key] = entry
                    todo.append((entry, child_base))
    if not added:
        return raw
    return {**raw, "workflows": table}


def _unknown(name: str, known: frozenset[str]) -> str:
    names = ", ".join(repr(k) for k in sorted(known)) or "none"
    hint = ""
    if name.endswith(_FILE_SUFFIXES) or "/" in name:
        hint = (" (not found as a file next to the spec that names it, nor registered "
                "with runfox.register_workflow)")
    return f"unknown workflow {name!r} (known: {names}){hint}"


def check_workflows(problems: _Problems, raw: dict[str, Any], places: Mapping[str | None, str],
                    compiled: Sequence[StepSpec | None], within: frozenset[str] | None
                    ) -> dict[str, Any]:
    """The compiler's checks of sub-workflow references; returns the ``workflows`` table.

    ``within`` is set while compiling an entry of a table: its static names are
    checked against the table's names, and nothing else is done (the top-level
    compile checks cycles and depth once, for the whole table).
    """
    from .spec import compile_spec  # spec imports this module

    table = raw.get("workflows")
    if table is None:
        table = {}
    elif not isinstance(table, dict):
        problems.add("workflows", "must be a mapping of workflow name to spec")
        table = {}
    known = within if within is not None else frozenset(table)
    roots = []
    for step in compiled:
        if step is not None and step.workflow is not None:
            if step.workflow not in known:
                problems.add(f"{places.get(step.id, step.id)}.workflow",
                             _unknown(step.workflow, known))
            else:
                roots.append(step.workflow)
    if within is not None:
        if "workflows" in raw:
            problems.add("workflows", "a sub-workflow has no table of its own; its entries "
                                      "belong in the top-level workflows")
        return {}
    edges: dict[str, list[str]] = {}
    names = frozenset(table)
    for name, entry in table.items():
        where = f"workflows[{name!r}]"
        if not isinstance(entry, dict):
            problems.add(where, f"must be a workflow spec (a mapping), got "
                                f"{type(entry).__name__}")
            continue
        try:
            child = compile_spec(entry, _within=names)
        except SpecError as exc:
            for problem in exc.problems:
                problems.add(f"{where}.{problem.where}" if problem.where else where,
                             problem.message)
            continue
        edges[name] = [s.workflow for s in child.steps if s.workflow is not None]
    if not problems.items:
        _check_chains(problems, raw, roots, edges)
    return table


def _check_chains(problems: _Problems, raw: dict[str, Any], roots: list[str],
                  edges: dict[str, list[str]]) -> None:
    """Refuse a cycle of static references, or a chain over ``limits.workflow_depth``."""
    limit = limits.current().workflow_depth
    name = raw.get("name")
    top = name if isinstance(name, str) and name else "(this workflow)"
    seen: set[tuple[str, int]] = set()  # (name, depth) already walked: a diamond costs once
    stack: list[tuple[list[str], list[str]]] = [([top], roots)]
    while stack:
        chain, refs = stack.pop()
        for ref in refs:
            if ref in chain[1:]:
                problems.add("workflows", "a cycle of sub-workflows: "
                                          + " -> ".join([*chain, ref]))
                return
            if len(chain) > limit:
                problems.add("workflows", f"sub-workflows nest deeper than "
                                          f"limits.workflow_depth ({limit}): "
                                          + " -> ".join([*chain, ref]))
                return
            if (ref, len(chain)) in seen:
                continue
            seen.add((ref, len(chain)))
            stack.append(([*chain, ref], edges.get(ref, [])))


# ---------------------------------------------------------------------------
# At run time
# ---------------------------------------------------------------------------


def child_spec(table: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The spec a child execution of ``name`` stores: its entry plus the whole table
    (so its own children resolve). ``KeyError`` for a name not in the table."""
    entry = table[name]
    return {**entry, "workflows": dict(table)}


def child_execution_id(parent_key: str, step_id: str, run_id: int) -> str:
    """The execution id of the child a step run starts: ``sub-`` and a digest of
    ``(parent key, step id, run id)``, so every process that looks at that step run
    (the claim, a sweep after a crash, a map item) finds the same child."""
    digest = hashlib.sha256(f"{parent_key}\n{step_id}\n{run_id}".encode()).hexdigest()
    return f"sub-{digest[:32]}"
