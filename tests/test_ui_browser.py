"""The dashboard in a real browser: headless Chromium from the system's packages
(``.ci/run`` installs ``chromium`` and ``chromium-driver``), driven by Selenium.

Over a SQLite database holding a 1,000-step execution (``tests/ui_data.py``): the
list shows the executions, the execution page draws 1,000 nodes coloured by status
with the status text on each and a legend, HTML and script in outputs and errors
stay text, a corrupt record is shown with its key, and a running execution's page
follows it without a reload. A screenshot of the 1,000-step page is kept (its path
is printed). Without Chromium the tests skip loudly; with RUNFOX_REQUIRE_SERVICES=1
they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from conftest import need_service

pytest.importorskip("flask", reason="the dashboard needs Flask (the ui extra)")

import ui_data
from werkzeug.serving import make_server

from runfox.cli.commands import close_backend, open_backend
from runfox.ui import create_app

pytestmark = pytest.mark.slow

#: The 1,000-step page must be interactive within this (ms from navigation start);
#: benchmarks/bench_ui.py measures the real figure (a few hundred ms here).
READY_BOUND_MS = 10_000
ARTIFACTS = Path(os.environ.get("RUNFOX_ARTIFACTS", Path(tempfile.gettempdir())
                                / "runfox-artifacts"))


class Site:
    def __init__(self, url: str, data: ui_data.Dataset, base: str) -> None:
        self.url, self.data, self.base = url, data, base

    def execution(self, key: str) -> str:
        return f"{self.base}#/execution/{quote(key, safe='')}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    url = f"sqlite:///{tmp_path_factory.mktemp('ui') / 'ui.db'}"
    data = ui_data.build(url)
    backend = open_backend(url)
    server = make_server("127.0.0.1", 0, create_app(backend, refresh_seconds=0.3),
                         threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Site(url, data, f"http://127.0.0.1:{server.server_port}/")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        close_backend(backend)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    missing = ui_data.chromium_missing()
    if missing is not None:
        need_service("chromium", missing)
    driver = ui_data.start_chromium(str(tmp_path_factory.mktemp("chromium-profile")))
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver: Any, url: str, view: str) -> float:
    driver.get("about:blank")  # a fresh document: a hash-only change would not reload
    driver.get(url)
    return ui_data.wait_for_view(driver, view)


def js(driver: Any, script: str) -> Any:
    return driver.execute_script(script)


def assert_nothing_ran(driver: Any) -> None:
    assert js(driver, "return window.__pwned") is None
    assert js(driver, "return document.querySelectorAll('img, #injected').length") == 0
    assert js(driver, "return document.querySelectorAll('script').length") == 1  # app.js


def test_the_list_shows_the_executions(browser: Any, site: Site) -> None:
    open_page(browser, site.base, "executions")
    rows = js(browser, "return [...document.querySelectorAll('#executions tbody tr')]"
                       ".map(r => r.dataset.id)")
    assert set(rows) == {site.data.big, site.data.small, site.data.running, site.data.corrupt}
    counts = js(browser, "return Object.fromEntries([...document.querySelectorAll("
                         "'#counts button')].map(b => [b.dataset.status, +b.dataset.count]))")
    assert counts == {"pending": 1, "in_progress": 1, "complete": 1, "halted": 0,
                      "failed": 1, "cancelled": 0}
    names = js(browser, "return [...document.querySelectorAll('#executions tbody tr')]"
                        ".map(r => r.children[1].textContent)")
    assert "big <i>fan</i> & co" in names  # the name as text, not markup
    assert_nothing_ran(browser)


def test_the_1000_step_execution(browser: Any, site: Site, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    ready_ms = open_page(browser, site.execution(site.data.big), "execution")
    nodes = js(browser, """return [...document.querySelectorAll('#dag g.node')].map(g => [
        g.dataset.step, g.dataset.status, g.querySelector('rect').getAttribute('fill'),
        g.querySelector('text.sst').textContent])""")
    assert len(nodes) == 1000
    colours = js(browser, "return fetch('/api/config').then(r => r.json())"
                          ".then(c => c.colours)")
    by_status: dict[str, int] = {}
    for step, status, fill, text in nodes:
        assert fill == colours[status], (step, status, fill)
        assert text.startswith(status), (step, text)
        by_status[status] = by_status.get(status, 0) + 1
    assert by_status["complete"] > 0 and by_status["failed"] == 1
    assert {"complete", "failed", "skipped"} <= set(by_status)
    assert dict(nodes_of(nodes))[ui_data.FAILING] == "failed"
    legend = js(browser, "return [...document.querySelectorAll('#legend > span')]"
                         ".map(s => [s.dataset.status, s.textContent])")
    order = js(browser, "return fetch('/api/config').then(r => r.json())"
                        ".then(c => c.step_statuses)")
    assert [status for status, _ in legend] == order
    for status, text in legend:
        assert text == f"{status} ({by_status.get(status, 0)})"
    swatch = js(browser, "return getComputedStyle(document.querySelector("
                         "'#legend [data-status=complete] .swatch')).backgroundColor")
    assert swatch == "rgb(200, 230, 201)"  # #c8e6c9
    assert js(browser, "return document.querySelectorAll('#step-table tbody tr').length") == 50
    # The payload is shown, as text (JSON), in the outcome and in the first step's output.
    shown = json.dumps(ui_data.PAYLOAD)[1:-1]
    assert shown in js(browser, "return document.getElementById('outcome').textContent")
    browser.find_element("css selector", "#dag g.node[data-step='s0_000']").click()
    output = js(browser, "return document.querySelector(\"#step-table tr[data-step='s0_000'] "
                         "td.output\").textContent")
    assert shown in output
    assert_nothing_ran(browser)
    events = js(browser, "return fetch(location.pathname + 'api/executions/' + "
                         f"encodeURIComponent({json.dumps(site.data.big)}) + '/history')"
                         ".then(r => r.json()).then(h => h.events.length)")
    on_page = js(browser, "return document.querySelectorAll('#timeline li').length")
    assert on_page == events  # every event is on the timeline (none where no history is kept)
    assert ready_ms < READY_BOUND_MS, f"interactive after {ready_ms:.0f} ms"

    browser.set_window_size(1400, 2300)  # tall enough for the whole graph, fitted
    js(browser, "document.getElementById('graph').scrollIntoView()")
    shot = tmp_path / "ui-1000-steps.png"
    try:
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        browser.set_window_size(1400, 1000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    kept = ARTIFACTS / shot.name
    shutil.copyfile(shot, kept)
    with capsys.disabled():
        print(f"\nbrowser test: 1,000-step page interactive after {ready_ms:.0f} ms; "
              f"screenshot: {kept}")


def nodes_of(nodes: list[list[str]]) -> list[tuple[str, str]]:
    return [(step, status) for step, status, _, _ in nodes]


def test_a_corrupt_record_is_shown_with_its_key(browser: Any, site: Site) -> None:
    open_page(browser, site.execution(site.data.corrupt), "execution")
    assert js(browser, "return document.getElementById('corrupt-key').textContent") \
        == site.data.corrupt
    assert "not JSON" in js(browser, "return document.getElementById('corrupt').textContent")


def test_unknown_and_ambiguous_ids_show_the_error(browser: Any, site: Site) -> None:
    open_page(browser, f"{site.base}#/execution/no-such-id", "error")  # waits for ready
    assert "no execution matches 'no-such-id'" in js(
        browser, "return document.getElementById('error').textContent")


def test_a_running_execution_refreshes(browser: Any, site: Site) -> None:
    open_page(browser, site.execution(site.data.running), "execution")
    status = "return document.querySelector(\"#dag g.node[data-step='first']\").dataset.status"
    assert js(browser, status) == "in_progress"
    backend = open_backend(site.url)
    try:
        run_id = backend.load(site.data.running).steps["first"].run_id
        backend.on_step_result(site.data.running, "first", {"v": 1}, run_id)
    finally:
        close_backend(backend)
    browser.implicitly_wait(0)
    for _ in range(100):  # the page polls every 0.3 s here
        if js(browser, status) == "complete":
            break
        js(browser, "return new Promise(r => setTimeout(r, 100))")
    assert js(browser, status) == "complete"


def test_schedules_and_workers_pages(browser: Any, site: Site) -> None:
    open_page(browser, f"{site.base}#/schedules", "schedules")
    cells = js(browser, "return [...document.querySelectorAll('#schedules tbody td')]"
                        ".map(td => td.textContent)")
    assert cells[:2] == ["nightly", "nightly <script>x</script>"]
    assert_nothing_ran(browser)
    open_page(browser, f"{site.base}#/workers", "workers")
    assert js(browser, "return document.querySelectorAll('#workers').length") == 1


def test_a_map_step_shows_its_item_counts(browser: Any, site: Site) -> None:
    """Last in this module: it adds an execution to the shared database."""
    from runfox.testing import map_executor, map_spec
    from runfox.workflow import Workflow

    backend = open_backend(site.url)
    try:
        backend.executor = map_executor(lambda x, _: x == 3)
        wf = Workflow.from_dict(map_spec(tolerate=1), backend, inputs={"n": 5})
        assert wf.run(timeout=60).__class__.__name__ == "Complete"
    finally:
        close_backend(backend)
    open_page(browser, site.execution(wf.id), "execution")
    header = js(browser, "return [...document.querySelectorAll('dl.meta dt')]"
                         ".find(dt => dt.textContent === 'steps').nextSibling.textContent")
    assert header == "3: complete 3"  # the spec's steps; its 5 items are not steps
    rows = js(browser, "return [...document.querySelectorAll('#step-table tbody tr')]"
                       ".map(r => r.dataset.step)")
    assert rows == ["ls", "each", "total"]
    items = js(browser, "return [...document.querySelectorAll('#step-table tbody tr')]"
                        ".map(r => (r.querySelector('.items') || {}).textContent || null)")
    assert items == [None, "items 5/5 done, 1 failed", None]
    assert js(browser, "return document.querySelectorAll('#dag g.node').length") == 3
    assert_nothing_ran(browser)
