"""The import arrows between runfox's modules point down the layer table in NOTES.md.

Every module under ``runfox/`` is parsed with ``ast`` (nothing is imported) and
each of its imports of another runfox module, at any depth (function bodies and
``TYPE_CHECKING`` blocks included), is checked against ``LAYERS``: a module may
import its own layer and the layers below the ones its row names, never a layer
above or beside it. An arrow that must point the wrong way for a while is listed in
``KNOWN_VIOLATIONS`` with the follow-up that removes it (the list is empty now);
an entry that no longer occurs fails the test too, so the list only shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "runfox"

# (layer, modules, layers it may import directly). Imports are allowed through the
# whole chain below a layer; "graph" and "store/runner" sit side by side and may not
# import each other. A name ending in ".*" covers a package's submodules.
LAYERS: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("foundation", ("runfox.errors", "runfox.jsonvalue", "runfox.limits", "runfox.urlmask"),
     ()),
    # Authoring steps in Python: the registry (an executor), binding, the step
    # context. User code imports it; the harness (workers) sets the context.
    ("authoring", ("runfox.authoring", "runfox.authoring.*"), ("foundation",)),
    ("spec", ("runfox.spec", "runfox.spec_schema", "runfox.actions", "runfox.expressions",
              "runfox.retry", "runfox.cache",
              "runfox.subflows"), ("foundation",)),
    ("records", ("runfox.records", "runfox.status", "runfox.results", "runfox.ids",
                 "runfox.schedule", "runfox.history", "runfox.payloads"),
     ("spec",)),
    ("graph", ("runfox.graph",), ("records",)),
    ("store/runner", (
        "runfox.backend.store", "runfox.backend.runner", "runfox.backend.schedule_store",
        "runfox.backend.workers", "runfox.backend.aws.workers",
        "runfox.backend.cache_store", "runfox.backend.aws.cache",
        "runfox.backend.sql", "runfox.backend.sql.*",
        "runfox.backend.aws._boto", "runfox.backend.aws._codec",
        "runfox.backend.aws.messages", "runfox.backend.aws.tasks",
        "runfox.backend.aws.store", "runfox.backend.aws.runner",
        "runfox.backend.aws.schedules", "runfox.backend.aws.slots",
        "runfox.backend.aws.testing",
        "runfox.backend.payload_store", "runfox.backend.aws.payloads",
    ), ("records",)),
    ("backend", (
        "runfox.backend.base", "runfox.backend.urls", "runfox.backend.registry",
        "runfox.backend.aws.config",
        "runfox.backend.children",
    ), ("graph", "store/runner")),
    # Calling an executor, and the harnesses built only on that: the in-process
    # worker and the Lambda handlers with their entry point.
    ("workers", (
        "runfox.execution", "runfox.inprocess", "runfox.schedules",
        "runfox.backend.aws.handlers", "runfox.backend.aws.entry",
    ), ("backend", "authoring")),
    # The standalone worker process (threads, processes, heartbeats, sweeps).
    ("worker harness", ("runfox.worker", "runfox.pool", "runfox.metrics",
                        "runfox.tracing"), ("workers",)),
    # What users hold: the Workflow handle, the CLI, the package facades and the
    # contract suites (which drive whole workflows).
    ("handle", (
        "runfox", "runfox.workflow", "runfox.cli", "runfox.cli.*",
        "runfox.ui", "runfox.ui.*",  # the dashboard; only runfox.cli.ui imports it
        "runfox.backend", "runfox.backend.aws", "runfox.testing",
    ), ("worker harness",)),
]

# (importer, imported) -> why it is still there and what removes it.
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str | None:
    for name, members, _ in LAYERS:
        for member in members:
            if module == member or (member.endswith(".*")
                                    and module.startswith(member[:-1])):
                return name
    return None


def allowed_layers() -> dict[str, set[str]]:
    direct = {name: set(below) for name, _, below in LAYERS}
    closure: dict[str, set[str]] = {}
    for name, _, _ in LAYERS:  # the table lists lower layers first
        reach = {name}
        for lower in direct[name]:
            reach |= closure[lower]
        closure[name] = reach
    return closure


def imports_of(module: str, path: Path) -> set[str]:
    """The runfox modules ``module`` imports (``from . import x`` names module ``x``)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.add(child if child in MODULES else base)
    return {name for name in found if name == "runfox" or name.startswith("runfox.")}


def all_arrows() -> list[tuple[str, str]]:
    return sorted((module, target) for module, path in MODULES.items()
                  for target in imports_of(module, path) if target != module)


def test_every_module_has_a_layer() -> None:
    missing = [m for m in MODULES if layer_of(m) is None]
    assert not missing, f"add these modules to LAYERS (and NOTES.md): {missing}"


def test_imports_point_down_the_layers() -> None:
    reach = allowed_layers()
    wrong = []
    for module, target in all_arrows():
        source_layer, target_layer = layer_of(module), layer_of(target)
        assert source_layer is not None and target_layer is not None, (module, target)
        if target_layer not in reach[source_layer] and (module, target) not in KNOWN_VIOLATIONS:
            wrong.append(f"{module} ({source_layer}) imports {target} ({target_layer})")
    assert not wrong, "imports against the layer table:\n" + "\n".join(wrong)


def test_known_violations_are_still_real() -> None:
    """A fixed arrow must leave KNOWN_VIOLATIONS, so the list never hides a new one."""
    reach = allowed_layers()
    arrows = set(all_arrows())
    for (module, target) in KNOWN_VIOLATIONS:
        assert (module, target) in arrows, f"{module} -> {target} is gone: delete its entry"
        source_layer, target_layer = layer_of(module), layer_of(target)
        assert source_layer is not None and target_layer is not None
        assert target_layer not in reach[source_layer], f"{module} -> {target} is allowed"


@pytest.mark.parametrize("module", ["runfox.backend.runner", "runfox.backend.store"])
def test_store_and_runner_contracts_import_no_worker_code(module: str) -> None:
    assert not {t for t in imports_of(module, MODULES[module])
                if layer_of(t) in ("workers", "worker harness")}


def test_the_layer_table_matches_notes() -> None:
    """NOTES.md's table names the same layers in the same order."""
    notes = (PACKAGE.parent / "NOTES.md").read_text(encoding="utf-8")
    table = notes.split("## Layout: the layers, in the tree", 1)[1].split("\n\n", 2)[1]
    rows = [line.split("|")[1].strip() for line in table.splitlines()
            if line.startswith("| ") and not line.startswith(("| layer", "| ---"))]
    assert rows == [name for name, _, _ in LAYERS]
