"""A SQLite database of executions for the dashboard's tests and benchmark.

``build(url)`` stores: a finished 1,000-step execution (10 layers of 100, each
step needing two of the layer above) in which one step fails, so its steps are
complete, failed, cancelled or skipped, and whose first step's output and the
failing step's error hold HTML and script; a small complete one; one left in
progress; one whose stored record is corrupt; and a schedule.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from runfox import Schedules
from runfox.backend import Backend, InProcessRunner
from runfox.backend.sql import SqlStore
from runfox.workflow import Workflow

#: What a step output and an error message carry; the page must show it as text.
PAYLOAD = ('<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
           '<b id="injected">bold</b>')
LAYERS, WIDTH = 10, 100
FAILING = "s6_050"


@dataclass
class Dataset:
    big: str
    small: str
    running: str
    corrupt: str


def big_spec() -> dict[str, Any]:
    steps = []
    for layer in range(LAYERS):
        for i in range(WIDTH):
            step: dict[str, Any] = {"id": f"s{layer}_{i:03d}", "fn": "work",
                                    "input": {"i": i, "layer": layer}}
            if layer:
                step["depends_on"] = [f"s{layer - 1}_{i:03d}",
                                      f"s{layer - 1}_{(i + 1) % WIDTH:03d}"]
            steps.append(step)
    return {"name": "big <i>fan</i> & co", "steps": steps}


def executor(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    if fn == "boom":
        return {"ok": False, "error": PAYLOAD}
    if fn == "work" and inputs.get("layer") == 6 and inputs.get("i") == 50:
        raise RuntimeError("step failed: " + PAYLOAD)
    if inputs.get("i") == 0 and inputs.get("layer") == 0:
        return {"html": PAYLOAD}
    return {"v": inputs.get("i", 0)}


def build(url: str) -> Dataset:
    """Fill the (new) SQLite database at ``url``; returns the execution ids."""
    store = SqlStore(url)
    backend = Backend(executor, store=store, runner=InProcessRunner(), poll_interval=0.01)
    try:
        small = Workflow.from_dict({"name": "small", "steps": [
            {"id": "a", "fn": "work", "input": {"i": 0, "layer": 0}},
            {"id": "b", "fn": "work", "depends_on": ["a"], "input": {"i": 1}}]}, backend)
        small.run(timeout=60)
        big = Workflow.from_dict(big_spec(), backend)
        big.run(timeout=300)
        running = Workflow.start({"name": "still running", "steps": [
            {"id": "first", "fn": "work"}, {"id": "second", "fn": "work",
                                             "depends_on": ["first"]}]}, backend)
        corrupt = Workflow.from_dict({"name": "to corrupt", "steps": [
            {"id": "x", "fn": "work"}]}, backend)
        Schedules(backend).add("nightly", {"name": "nightly <script>x</script>", "steps": [
            {"id": "a", "fn": "work"}]}, cron="30 2 * * *")
    finally:
        store.close()
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE runfox_workflows SET spec = ? WHERE workflow_execution_id = ?",
                     ("{not json", corrupt.id))
    return Dataset(big=big.id, small=small.id, running=running.id, corrupt=corrupt.id)


# -- headless Chromium (the browser test and benchmarks/bench_ui.py) ------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: The flags this machine needs: no sandbox as root, no GPU, no connection attempts to
#: Google's services (the network is closed and each refused connection costs time).
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage")


def chromium_missing() -> str | None:
    """Why the browser cannot run here, or ``None`` when it can."""
    import os
    import shutil

    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.exists(path) or shutil.which(os.path.basename(path))):
            return f"{path} is not installed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (it is in the dev extra)"
    return None


def start_chromium(profile: str, width: int = 1400, height: int = 1000) -> Any:
    """A Selenium driver on the system's Chromium and ChromeDriver (nothing downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def wait_for_view(driver: Any, view: str, timeout: float = 30.0) -> float:
    """Wait until the page says ``view`` rendered; returns its ``data-ready`` (ms)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = driver.execute_script(
            "return [document.body.dataset.view, document.body.dataset.ready,"
            " (document.getElementById('error') || {}).textContent]")
        if state[0] == view and state[1]:
            return float(state[1])
        if state[0] == "error":
            raise AssertionError(f"the page shows an error: {state[2]}")
        time.sleep(0.02)
    raise AssertionError(f"the {view} view did not render within {timeout:g}s")
