"""Backends as plug-ins: the URL scheme registry and the ``runfox.backends`` entry points.

The entry-point tests build a throwaway distribution in the test's temporary
directory: a ``runfox_demo`` package and a ``runfox_demo-0.1.dist-info`` folder
beside it whose ``entry_points.txt`` declares ``demo``. A directory holding a
``*.dist-info`` is all ``importlib.metadata`` needs, so nothing is installed and
no network is used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runfox.backend import InMemoryStore, InProcessRunner, Runner, Store, registry
from runfox.backend.urls import backend_from_url, parts_from_url
from runfox.errors import BackendError
from runfox.testing import StoreContract

ROOT = Path(__file__).resolve().parent.parent

DEMO_PACKAGE = '''
"""A third-party backend for runfox, in as few lines as it takes."""
import os

from runfox.backend import InMemoryStore, InProcessRunner


class DemoStore(InMemoryStore):
    """The in-memory store, noting each write in the file the URL names."""

    def __init__(self, log_path):
        super().__init__()
        self.log_path = log_path

    def _write(self, record, previous):
        super()._write(record, previous)
        if self.log_path:
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write(f"{record.workflow_execution_id} v{record.version}\\n")


class DemoRunner(InProcessRunner):
    pass


def parts_from_url(url, **options):
    if options:
        raise ValueError(f"demo:// takes no options: {sorted(options)}")
    path = url.split("://", 1)[1]
    return DemoStore(path or None), DemoRunner()


def execute(fn, inputs):
    if fn == "double":
        return {"x": inputs["x"] * 2}
    raise ValueError(f"unknown fn {fn!r}")
'''


def make_distribution(site: Path, name: str, entry_points: dict[str, str],
                      module: str | None = None, source: str = "") -> None:
    """A ``<name>-0.1.dist-info`` in ``site`` declaring ``runfox.backends`` entry points."""
    if module is not None:
        (site / module).mkdir(parents=True)
        (site / module / "__init__.py").write_text(textwrap.dedent(source), encoding="utf-8")
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n",
                                   encoding="utf-8")
    lines = [f"{scheme} = {value}" for scheme, value in entry_points.items()]
    (info / "entry_points.txt").write_text("[runfox.backends]\n" + "\n".join(lines) + "\n",
                                           encoding="utf-8")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty directory on ``sys.path``; the registry re-reads entry points around it."""
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))  # also invalidates the import caches
    registry.refresh()
    yield path
    for name in [m for m in sys.modules if m.split(".")[0].startswith("runfox_demo")]:
        del sys.modules[name]
    registry.refresh()


@pytest.fixture
def demo_site(site: Path) -> Path:
    make_distribution(site, "runfox-demo", {"demo": "runfox_demo:parts_from_url"},
                      module="runfox_demo", source=DEMO_PACKAGE)
    registry.refresh()
    return site


# -- the registry ----------------------------------------------------------------------


def test_builtin_schemes_are_the_entry_points_runfox_declares() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    declared = pyproject["project"]["entry-points"]["runfox.backends"]
    assert declared == registry.BUILTIN


def test_every_builtin_scheme_resolves_to_a_callable() -> None:
    for scheme in registry.BUILTIN:
        assert callable(registry.factory_for(scheme))
    sql = registry.factory_for("sqlite")
    assert registry.factory_for("postgresql+psycopg") is sql  # driver suffix falls back
    assert registry.factory_for("MySQL+PyMySQL") is sql


def test_memory_urls_need_no_package() -> None:
    store, runner = parts_from_url("memory://")
    assert isinstance(store, InMemoryStore) and isinstance(runner, InProcessRunner)
    with pytest.raises(ValueError, match="unknown option"):
        parts_from_url("memory://", lease=3)


def test_an_unknown_scheme_lists_the_known_ones_and_how_to_add_one() -> None:
    with pytest.raises(ValueError) as caught:
        parts_from_url("nosuch://somewhere")
    message = str(caught.value)
    assert "'nosuch'" in message
    assert "aws, mariadb, memory, mysql, postgres, postgresql, sqlite" in message
    assert "runfox.backends" in message and "register(" in message


def test_a_url_without_a_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="has no scheme"):
        parts_from_url("runfox.db")
    with pytest.raises(ValueError, match="not a URL scheme"):
        registry.register("1x", lambda url: None)


def test_register_wins_over_builtins_until_unregistered() -> None:
    made: list[str] = []

    def factory(url: str, **options: Any) -> tuple[Store, Runner]:
        made.append(url)
        return InMemoryStore(), InProcessRunner()

    registry.register("sqlite", factory)
    try:
        backend = backend_from_url("sqlite:///not-created.db")
        assert isinstance(backend.store, InMemoryStore)
        assert made == ["sqlite:///not-created.db"]
    finally:
        registry.unregister("sqlite")
    assert registry.factory_for("sqlite") is not factory


def test_register_takes_a_module_reference() -> None:
    registry.register("mem2", "runfox.backend.registry:memory_parts")
    try:
        assert "mem2" in registry.known_schemes()
        store, _ = parts_from_url("mem2://")
        assert isinstance(store, InMemoryStore)
    finally:
        registry.unregister("mem2")
    assert "mem2" not in registry.known_schemes()


def test_a_factory_must_return_a_store_and_a_runner() -> None:
    registry.register("broken", lambda url, **options: ("store", "runner"))
    try:
        with pytest.raises(TypeError, match="not a \\(Store, Runner\\) pair"):
            parts_from_url("broken://")
    finally:
        registry.unregister("broken")


# -- entry points ----------------------------------------------------------------------


def test_an_entry_point_adds_a_scheme(demo_site: Path) -> None:
    assert "demo" in registry.known_schemes()
    assert "runfox_demo" not in sys.modules  # imported on first use, not on listing
    store, runner = parts_from_url(f"demo://{demo_site / 'writes.log'}")
    assert type(store).__name__ == "DemoStore" and isinstance(store, InMemoryStore)
    assert type(runner).__name__ == "DemoRunner"


def test_an_entry_point_that_cannot_load_names_its_package(site: Path) -> None:
    make_distribution(site, "runfox-demo-broken", {"demo": "runfox_demo_missing:parts"})
    registry.refresh()
    with pytest.raises(BackendError, match=r"runfox-demo-broken 0\.1.*runfox_demo_missing"):
        parts_from_url("demo://")


def test_two_packages_claiming_one_scheme_is_an_error(site: Path) -> None:
    make_distribution(site, "runfox-demo-one", {"demo": "runfox_demo_one:parts"})
    make_distribution(site, "runfox-demo-two", {"demo": "runfox_demo_two:parts"})
    registry.refresh()
    with pytest.raises(BackendError) as caught:
        parts_from_url("demo://")
    assert "runfox-demo-one" in str(caught.value) and "runfox-demo-two" in str(caught.value)
    registry.register("demo", "runfox.backend.registry:memory_parts")  # settles it
    try:
        assert isinstance(parts_from_url("demo://")[0], InMemoryStore)
    finally:
        registry.unregister("demo")


def test_runfox_run_uses_a_plugin_backend(demo_site: Path, tmp_path: Path) -> None:
    """The must-show: ``runfox run --backend demo://...`` runs a workflow through it."""
    spec = {"name": "doubled", "steps": [
        {"id": "a", "fn": "double", "input": {"x": {"var": "input.x"}}},
        {"id": "b", "fn": "double", "depends_on": ["a"],
         "input": {"x": {"var": "steps.a.output.x"}}}],
        "outputs": {"x": {"var": "steps.b.output.x"}}}
    spec_path = tmp_path / "doubled.yaml"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    log = tmp_path / "writes.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNFOX_")}
    env["PYTHONPATH"] = os.pathsep.join([str(demo_site), str(ROOT)])
    done = subprocess.run(
        [sys.executable, "-m", "runfox.cli", "run", "--backend", f"demo://{log}",
         str(spec_path), "--executor", "runfox_demo:execute", "--input", "x=3", "--quiet"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"x": 12}
    writes = log.read_text(encoding="utf-8").splitlines()
    assert len(writes) >= 3 and writes[0].endswith(" v1")  # created, then transitions
    assert not (tmp_path / "runfox.db").exists()  # the default backend was not touched


class TestDemoStoreContract(StoreContract):
    """The plug-in's store, found through its entry point, passes runfox's own suite."""

    @pytest.fixture
    def store(self, demo_site: Path) -> Store:
        store, _ = parts_from_url(f"demo://{demo_site / 'contract.log'}")
        assert type(store).__name__ == "DemoStore"
        return store
