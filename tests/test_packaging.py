"""Packaging and command-line basics: licence, version, dependencies, help, global options."""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

import runfox
from runfox.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

# Import name -> distribution name, for the third-party modules runfox imports.
DISTRIBUTIONS = {
    "yaml": "PyYAML",
    "jsonpath_ng": "jsonpath-ng",
    "croniter": "croniter",
    "sqlalchemy": "SQLAlchemy",
    "alembic": "alembic",
    "boto3": "boto3",
    "botocore": "boto3",
    "psycopg": "psycopg",
    "pymysql": "PyMySQL",
    "pytest": "pytest",
    "moto": "moto",
    "werkzeug": "moto",  # moto's server (runfox.backend.aws.testing) and runfox ui run on it
    "flask": "flask",  # runfox ui (the ui extra), imported only by `runfox ui`
    "prometheus_client": "prometheus-client",  # runfox.metrics, the [metrics] extra
    "opentelemetry": "opentelemetry-api",  # runfox.tracing, the [otel] extra
    "inotify_simple": "inotify_simple",  # the SQLite watcher on Linux, the [sql] extra
}


def requirement_names(requirements: list[str]) -> set[str]:
    names = set()
    for requirement in requirements:
        name = requirement.split(";")[0]
        for mark in "[<>=!~ ":
            name = name.split(mark)[0]
        names.add(name.strip().lower())
    return names


def third_party_imports() -> dict[str, set[str]]:
    """Top-level third-party module -> the runfox modules importing it."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "runfox").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "runfox" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


# -- packaging -------------------------------------------------------------------------


def test_license_file_and_spdx_expression() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 runfox developers" in text
    assert PYPROJECT["project"]["license"] == "MIT"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    requires = PYPROJECT["build-system"]["requires"]
    assert any(r.startswith("setuptools>=") and int(r.split(">=")[1].split(".")[0]) >= 77
               for r in requires), "SPDX license strings need setuptools >= 77"


def test_the_version_is_written_once() -> None:
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "runfox.__version__"}
    assert runfox.__version__.count(".") == 2


def test_every_imported_package_is_declared() -> None:
    core = requirement_names(PYPROJECT["project"]["dependencies"])
    extras = set().union(*(requirement_names(reqs) for reqs in
                           PYPROJECT["project"]["optional-dependencies"].values()))
    imported = third_party_imports()
    unknown = set(imported) - set(DISTRIBUTIONS)
    assert not unknown, f"add these imports to DISTRIBUTIONS: {sorted(unknown)}"
    for module in imported:
        assert DISTRIBUTIONS[module].lower() in core | extras, (module, imported[module])
    # Imported by the spec and expression layers, so needed by every install.
    assert {"pyyaml", "jsonpath-ng", "json-logic-path", "croniter"} <= core


def test_importing_runfox_needs_no_pytest() -> None:
    code = ("import sys, runfox, runfox.cli, runfox.backend.urls, runfox.backend.registry; "
            "assert 'pytest' not in sys.modules, 'pytest was imported'")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# -- command line ----------------------------------------------------------------------


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNFOX_BACKEND", raising=False)
    monkeypatch.delenv("RUNFOX_EXECUTOR", raising=False)
    return tmp_path


def test_no_arguments_prints_help_as_a_usage_error(capsys: Any) -> None:
    assert main([]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("usage: runfox") and "COMMAND" in err and "examples:" in err


def test_help_goes_to_stdout_and_exits_0(capsys: Any) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--help"])
    assert caught.value.code == 0
    assert "--version" in capsys.readouterr().out


def test_version(capsys: Any) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out == f"runfox {runfox.__version__}\n"


def test_backend_before_the_command(workdir: Path, capsys: Any) -> None:
    assert main(["--backend", f"sqlite:///{workdir / 'global.db'}", "list"]) == 0
    assert (workdir / "global.db").exists()
    assert not (workdir / "runfox.db").exists()


def test_the_commands_own_backend_wins(workdir: Path, capsys: Any) -> None:
    assert main(["--backend", "nosuch://x", "list", "--backend", "memory://"]) == 0
    assert main(["--backend", "memory://", "list", "--backend", "nosuch://x"]) == 2
    assert "unknown backend URL scheme 'nosuch'" in capsys.readouterr().err


def test_debug_before_the_command(workdir: Path, capsys: Any) -> None:
    assert main(["--debug", "--backend", "nosuch://x", "list"]) == 2
    assert "Traceback" in capsys.readouterr().err
    assert main(["--backend", "nosuch://x", "list"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_every_option_has_help_and_every_command_an_example() -> None:
    parser = build_parser()
    commands = _subcommands(parser)
    assert set(commands) >= {"run", "start", "worker", "status", "list", "cancel", "graph"}
    for name, command in [("runfox", parser), *commands.items()]:
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)
        if command is not parser:
            assert command.epilog and "example" in command.epilog, name
            assert f"runfox {name}" in command.epilog, name
