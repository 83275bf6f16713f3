"""Local trust: the current directory never shadows installed packages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from runfox.worker import load_executor

SHADOW = "raise SystemExit('SHADOWED: imported ./{name}.py from the current directory')\n"


def console_script(tmp_path: Path) -> Path:
    """What the ``runfox`` console script does, kept outside the working directory."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "runfox_cli.py"
    script.write_text("import sys\nfrom runfox.cli import main\nsys.exit(main())\n")
    return script


def test_runfox_list_does_not_import_a_module_from_the_current_directory(tmp_path: Path) -> None:
    cwd = tmp_path / "project"
    cwd.mkdir()
    for name in ("sqlalchemy", "yaml", "json"):
        (cwd / f"{name}.py").write_text(SHADOW.format(name=name))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RUNFOX_BACKEND", None)
    done = subprocess.run([sys.executable, str(console_script(tmp_path)), "list"], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=120)
    assert "SHADOWED" not in done.stdout + done.stderr
    assert done.returncode == 0, done.stderr
    assert (cwd / "runfox.db").exists()  # the default backend, in the current directory


def test_load_executor_searches_the_current_directory_last(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = str(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", cwd, os.getcwd())])
    for name in ("colorsys", "runfox_local_steps"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    (tmp_path / "colorsys.py").write_text(SHADOW.format(name="colorsys"))
    (tmp_path / "runfox_local_steps.py").write_text(
        "def execute(fn, inputs):\n    return {'fn': fn}\n")
    # An installed (here: standard library) module wins over ./colorsys.py ...
    rgb_to_hls = load_executor("colorsys:rgb_to_hls")
    assert rgb_to_hls(1.0, 0.0, 0.0) == (0.0, 0.5, 1.0)
    # ... and a module only the current directory has is still found, from the end of the path.
    assert load_executor("runfox_local_steps:execute")("f", {}) == {"fn": "f"}
    assert sys.path[-1] == cwd and sys.path.count(cwd) == 1
    load_executor("runfox_local_steps:execute")
    assert sys.path.count(cwd) == 1

