"""The dashboard's JSON endpoints, through Flask's test client (no browser, no port).

The page itself runs in a real browser in ``tests/test_ui_browser.py``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

pytest.importorskip("flask", reason="the dashboard needs Flask (the ui extra)")

import ui_data
from flask.testing import FlaskClient

from runfox.backend import Backend, InMemoryStore, InProcessRunner
from runfox.cli.commands import open_backend
from runfox.results import Complete
from runfox.testing import map_executor, map_spec
from runfox.ui import create_app
from runfox.ui.data import parse_since
from runfox.workflow import Workflow

STATIC = Path(__file__).resolve().parent.parent / "runfox" / "ui" / "static"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ui_data.Dataset]:
    url = f"sqlite:///{tmp_path_factory.mktemp('ui') / 'ui.db'}"
    return url, ui_data.build(url)


@pytest.fixture
def client(dataset: tuple[str, ui_data.Dataset]) -> Iterator[FlaskClient]:
    backend = open_backend(dataset[0])
    try:
        yield create_app(backend).test_client()
    finally:
        backend.store.close()
        backend.runner.close()


def path_of(key: str) -> str:
    return "/api/executions/" + quote(key, safe="")


def get(client: FlaskClient, path: str, status: int = 200) -> Any:
    response = client.get(path)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return response.get_json()


def test_the_list_has_every_decodable_execution_and_counts(client: FlaskClient,
                                                           dataset: Any) -> None:
    ids = dataset[1]
    page = get(client, "/api/executions")
    listed = {e["id"]: e for e in page["executions"]}
    assert {ids.big, ids.small, ids.running, ids.corrupt} <= set(listed)
    assert listed[ids.big]["status"] == "failed"
    assert listed[ids.big]["name"] == "big <i>fan</i> & co"
    assert page["counts"]["failed"] == 1 and page["counts"]["in_progress"] == 1
    assert page["total"] == 4 and not page["truncated"]
    created = [e["created_at"] for e in page["executions"]]
    assert created == sorted(created, reverse=True)


def test_list_filters(client: FlaskClient, dataset: Any) -> None:
    ids = dataset[1]
    failed = get(client, "/api/executions?status=failed")
    assert [e["id"] for e in failed["executions"]] == [ids.big]
    assert failed["counts"]["complete"] == 1  # counts ignore the status filter
    assert failed["counts"]["pending"] == 1
    workflow = ids.small.partition("#")[0]
    only = get(client, f"/api/executions?workflow={workflow}")
    assert [e["id"] for e in only["executions"]] == [ids.small]
    assert get(client, "/api/executions?workflow=small")["total"] == 1  # by name too
    assert get(client, "/api/executions?since=2999-01-01T00:00:00Z")["total"] == 0
    assert get(client, "/api/executions?since=0")["total"] == 4
    assert len(get(client, "/api/executions?limit=2")["executions"]) == 2


@pytest.mark.parametrize("query, message", [
    ("status=nope", "status: 'nope' is not one of"),
    ("limit=x", "limit: 'x' is not an integer"),
    ("limit=0", "limit: must be between 1 and 1000"),
    ("since=yesterday", "since: 'yesterday' is neither"),
])
def test_bad_list_parameters_are_400_with_a_message(client: FlaskClient, query: str,
                                                    message: str) -> None:
    assert message in get(client, f"/api/executions?{query}", 400)["error"]


def test_one_execution_has_steps_and_graph(client: FlaskClient, dataset: Any) -> None:
    ids = dataset[1]
    detail = get(client, path_of(ids.big))
    assert detail["status"] == "failed" and detail["terminal"] is True
    assert len(detail["steps"]) == 1000 and len(detail["graph"]["nodes"]) == 1000
    assert len(detail["graph"]["edges"]) == 900 * 2
    assert all(kind == "dep" for _, _, kind in detail["graph"]["edges"])
    steps = {s["id"]: s for s in detail["steps"]}
    assert steps["s0_000"]["output"] == {"html": ui_data.PAYLOAD}
    assert steps["s1_000"]["inputs"] == {"i": 0, "layer": 1}  # resolved inputs
    failed = steps[ui_data.FAILING]
    assert failed["status"] == "failed" and failed["attempts"] == 1
    assert ui_data.PAYLOAD in failed["error"]["message"]
    assert sum(detail["progress"].values()) == 1000
    assert set(detail["colours"]) == set(detail["progress"])


def test_an_execution_by_unique_prefix(client: FlaskClient, dataset: Any) -> None:
    ids = dataset[1]
    execution_id = ids.small.partition("#")[2]
    assert get(client, path_of(execution_id[:-4]))["id"] == ids.small


def test_unknown_and_ambiguous_ids(client: FlaskClient) -> None:
    assert get(client, path_of("nope"), 404)["error"] == "no execution matches 'nope'"
    body = get(client, path_of("2"), 400)  # every execution id starts with the year
    assert "matches several executions" in body["error"]
    assert len(body["candidates"]) == 4
    assert get(client, path_of("nope") + "/history", 404)["error"].startswith("no execution")


def test_a_corrupt_record_is_reported_with_its_key(client: FlaskClient, dataset: Any) -> None:
    ids = dataset[1]
    body = get(client, path_of(ids.corrupt))
    assert body["corrupt"]["key"] == ids.corrupt
    assert "not JSON" in body["corrupt"]["reason"]


def test_history_events_or_a_note(client: FlaskClient, dataset: Any) -> None:
    body = get(client, path_of(dataset[1].small) + "/history")
    assert isinstance(body["events"], list)
    if body["events"]:  # a store with history (runfox.history)
        assert body["events"][0]["type"] == "created"
    else:
        assert body["note"]


def test_workers_and_schedules(client: FlaskClient) -> None:
    assert get(client, "/api/workers") == {"workers": []}  # a registry, no worker yet
    schedules = get(client, "/api/schedules")["schedules"]
    assert [s["name"] for s in schedules] == ["nightly"]
    assert schedules[0]["workflow"] == "nightly <script>x</script>"
    assert "spec" not in schedules[0]


def test_a_store_without_schedules_answers_a_note() -> None:
    class Bare(InMemoryStore):
        def schedules(self) -> Any:
            from runfox.errors import BackendError
            raise BackendError("Bare keeps no schedules")

    app = create_app(Backend(store=Bare(), runner=InProcessRunner()))
    body = get(app.test_client(), "/api/schedules")
    assert body == {"schedules": [], "note": "Bare keeps no schedules"}


def test_history_and_workers_are_read_where_the_backend_has_them() -> None:
    """History events (a corrupt one names its key) and the worker registry, each
    marked alive or dead."""
    from dataclasses import dataclass

    from runfox import Workflow
    from runfox.backend.workers import WorkerInfo

    @dataclass
    class Event:
        type: str
        time: float
        details: dict[str, Any]

        def to_dict(self) -> dict[str, Any]:
            return {"type": self.type, "time": self.time, "details": self.details}

    class Kept(InMemoryStore):
        def history(self, key: str) -> list[Event]:
            self.load_shared(key)
            return [Event("created", 1.0, {}),
                    Event("corrupt", 2.0, {"key": f"{key}/7", "error": "not JSON"})]

    backend = Backend(lambda fn, inputs: {}, store=Kept(), runner=InProcessRunner())
    key = Workflow.from_dict({"steps": [{"id": "a", "fn": "f"}]}, backend).id
    client = create_app(backend).test_client()
    events = get(client, path_of(key) + "/history")["events"]
    assert [e["type"] for e in events] == ["created", "corrupt"]
    assert events[1]["details"]["key"] == f"{key}/7"
    now = time.time()
    registry = backend.store.workers()
    registry.register(WorkerInfo(id="w1", host="h", pid=1, executor="m:f", concurrency=2,
                                 started_at=now - 60, heartbeat_at=now, interval=1.0,
                                 lease=3.0, jobs={"j": now}))
    registry.register(WorkerInfo(id="w2", host="h", pid=2, executor=None, concurrency=1,
                                 started_at=now - 60, heartbeat_at=now - 30, interval=1.0,
                                 lease=3.0))
    rows = {w["id"]: w for w in get(client, "/api/workers")["workers"]}
    assert rows["w1"]["alive"] == "alive" and rows["w1"]["jobs"] == 1
    assert rows["w2"]["alive"] == "dead" and rows["w2"]["silent_for"] >= 29


def test_read_only_and_safe_headers(client: FlaskClient) -> None:
    for method in (client.post, client.put, client.delete, client.patch):
        response = method("/api/executions")
        assert response.status_code == 405
        assert "read-only" in response.get_json()["error"]
    page = client.get("/")
    assert page.status_code == 200 and b"/static/app.js" in page.data
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/static/app.js").mimetype == "text/javascript"
    assert client.get("/static/../app.py").status_code == 404
    assert get(client, "/api/nothing", 404)["error"] == "no such page: /api/nothing"


def test_the_page_never_inserts_html() -> None:
    """Data reaches the DOM through textContent and setAttribute only."""
    script = (STATIC / "app.js").read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function"):
        assert sink not in script, sink
    assert not re.search(r"<script>(?!window)", (STATIC / "index.html").read_text())


def test_only_the_ui_command_imports_the_dashboard() -> None:
    """``runfox.ui`` (and Flask) load when ``runfox ui`` runs, never before."""
    package = STATIC.parent.parent
    importers = sorted(str(path.relative_to(package.parent)) for path in package.rglob("*.py")
                       if "ui" not in path.relative_to(package).parts[:1]
                       and re.search(r"^\s*from \.\.?ui import|import runfox\.ui|from runfox\.ui",
                                     path.read_text(encoding="utf-8"), re.MULTILINE))
    assert importers == ["runfox/cli/ui.py"]
    code = ("import sys, runfox, runfox.cli; "
            "assert 'flask' not in sys.modules and 'runfox.ui' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_parse_since() -> None:
    assert parse_since("1700000000") == 1700000000.0
    assert parse_since("1970-01-01T00:01:00") == 60.0
    assert parse_since("1970-01-01T01:00:00+01:00") == 0.0
    with pytest.raises(ValueError, match="since"):
        parse_since("soon")


def test_the_ui_command_serves_until_stopped(tmp_path: Path, dataset: Any) -> None:
    with subprocess.Popen(
            [sys.executable, "-m", "runfox.cli", "ui", "--backend", dataset[0], "--port", "0"],
            stderr=subprocess.PIPE, text=True, cwd=tmp_path) as process:
        try:
            assert process.stderr is not None
            line = process.stderr.readline()
            found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
            assert found, line
            with urllib.request.urlopen(f"{found.group(0)}api/executions", timeout=10) as answer:
                assert b'"counts"' in answer.read()
        finally:
            process.terminate()
            process.wait(timeout=10)


def test_the_ui_command_refuses_a_bad_port(tmp_path: Path, capsys: Any) -> None:
    from runfox.cli import main

    assert main(["ui", "--backend", f"sqlite:///{tmp_path / 'x.db'}", "--port", "70000"]) == 2
    assert "--port must be between 0 and 65535" in capsys.readouterr().err



def test_a_map_execution_counts_spec_steps_and_shows_item_counts() -> None:
    """A map of 5 items, one failed and tolerated: ``progress`` counts the 3 steps of
    the spec (not 8 records), the map step's row carries its item counts, and item
    records (``each[i]``) are neither rows nor nodes."""
    backend = Backend(map_executor(lambda x, _: x == 3), store=InMemoryStore(),
                      runner=InProcessRunner(), poll_interval=0.01)
    wf = Workflow.from_dict(map_spec(tolerate=1), backend, {"n": 5})
    assert isinstance(wf.run(timeout=60), Complete)
    detail = get(create_app(backend).test_client(), path_of(wf.id))
    assert detail["progress"] == {**dict.fromkeys(detail["colours"], 0), "complete": 3}
    rows = {s["id"]: s for s in detail["steps"]}
    assert list(rows) == ["ls", "each", "total"]
    assert rows["each"]["items"] == {"total": 5, "settled": 5, "complete": 4, "failed": 1,
                                     "in_progress": 0}
    assert rows["ls"]["items"] is None and rows["total"]["items"] is None
    assert [n["id"] for n in detail["graph"]["nodes"]] == ["ls", "each", "total"]
