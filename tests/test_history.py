"""Execution history beyond the contract suite: the pure event derivation, the JSON
form and its errors, corrupt stored events, the CLI, and what history costs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

import runfox as rfx
from runfox.backend import Backend, InMemoryStore
from runfox.backend.sql import SqlStore
from runfox.backend.sql.schema import history as history_table
from runfox.cli import main
from runfox.errors import BackendError
from runfox.graph import advance, on_step_result
from runfox.history import Event, HistoryContext, events_between
from runfox.testing import FakeClock, new_record


def _types(events: list[Event]) -> list[tuple[str, str | None]]:
    return [(e.type, e.step_id) for e in events]


def test_events_follow_from_the_two_records_alone() -> None:
    v1 = new_record({"steps": [{"id": "a", "fn": "f"}, {"id": "b", "fn": "g"}]})
    r2, _ = advance(v1, 10.0)
    v2 = r2.evolve(version=2, updated_at=10.0)
    assert _types(events_between(v1, v2)) == [("claimed", "a"), ("claimed", "b")]
    r3, _ = on_step_result(v2, "a", {"x": 1}, 0, 12.0)
    v3 = r3.evolve(version=3, updated_at=12.0)
    timing = {("a", 0): {"started_at": 11.0, "duration": 0.5, "worker": "w"}}
    events = events_between(v2, v3, HistoryContext("driver", timing))
    assert _types(events) == [("started", "a"), ("completed", "a")]
    assert events[1].details == {"run_time": 2.0, "duration": 0.5, "queued": 1.0, "worker": "w"}
    assert [e.seq for e in events] == [(3, 0), (3, 1)]
    assert events_between(v3, v3) == []


def test_a_lost_worker_is_a_lease_expired_event() -> None:
    backend = Backend(clock=FakeClock())
    wf_id = backend.create({"steps": [{"id": "a", "fn": "f"}]})
    backend.advance(wf_id)
    backend.apply_and_advance(wf_id, [("a", {"ok": False, "error": "lease ran out",
                                             "error_type": "WorkerLost"}, 0)], worker="w2")
    assert _types(backend.history(wf_id)[2:]) == [
        ("lease_expired", "a"), ("retry_scheduled", "a"), ("claimed", "a")]
    lost = backend.history(wf_id)[2]
    assert lost.details["worker"] == "w2" and lost.attempt == 1 and lost.run_id == 0


@pytest.mark.parametrize("data, problem", [
    ([], "must be an object"),
    ({"execution": "x", "version": 1, "index": 0, "time": 1.0}, "'type'"),
    ({"execution": "x", "version": "1", "index": 0, "time": 1.0, "type": "t"}, "'version'"),
    ({"execution": "x", "version": 1, "index": 0, "time": "now", "type": "t"}, "'time'"),
    ({"execution": "x", "version": 1, "index": 0, "time": 1, "type": "t", "details": []},
     "'details'"),
])
def test_event_json_errors_name_the_field(data: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Event.from_dict(data)


def test_a_stored_event_that_does_not_decode_is_shown_as_corrupt(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'h.db'}")
    try:
        backend = Backend(store=store, executor=lambda fn, inputs: {})
        wf = rfx.Workflow.from_dict({"steps": [{"id": "a", "fn": "f"}]}, backend)
        wf.run(timeout=30)
        with store.engine.begin() as conn:
            conn.execute(insert(history_table).values(
                workflow_execution_id=wf.id, version=99, idx=0, time=0.0, type="x",
                step_id=None, run_id=None, data="{not json"))
        events = wf.history()
        corrupt = events[-1]
        assert corrupt.type == "corrupt" and corrupt.seq == (99, 0)
        assert corrupt.details["key"] == f"runfox_history({wf.id}, version 99, idx 0)"
        assert corrupt.details["stored"] == "{not json"
        assert [e.type for e in events[:-1]] == [
            "created", "claimed", "completed", "workflow_ended"]
    finally:
        store.close()


def test_a_store_without_history_says_so() -> None:
    class Plain(InMemoryStore):
        keeps_history = False

    backend = Backend(store=Plain())
    wf_id = backend.create({"steps": [{"id": "a", "fn": "f"}]})
    backend.advance(wf_id)
    with pytest.raises(BackendError, match="keeps no execution history"):
        backend.history(wf_id)


def test_cli_history_and_prune(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    store = SqlStore(url)
    backend = Backend(store=store, executor=lambda fn, inputs: {"ok": True})
    wf = rfx.Workflow.from_dict({"name": "cli", "steps": [{"id": "a", "fn": "f"}]}, backend)
    wf.run(timeout=30)
    store.close()
    prefix = wf.id.split("#")[1][:16]
    assert main(["history", prefix, "--backend", url]) == 0
    out = capsys.readouterr().out
    assert wf.id in out and "workflow_ended" in out and "claimed          a run 0" in out
    assert main(["history", prefix, "--json", "--backend", url]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [e["type"] for e in data] == ["created", "claimed", "completed", "workflow_ended"]
    assert main(["history", "nope", "--backend", url]) == 2
    assert "no execution matches 'nope'" in capsys.readouterr().err
    assert main(["prune", "--older-than", "1x", "--backend", url]) == 2
    assert main(["prune", "--older-than", "1d", "--status", "in_progress", "--backend",
                 url]) == 2
    assert "not a finished status" in capsys.readouterr().err
    assert main(["prune", "--older-than", "1d", "--backend", url]) == 0
    assert "removed 0 executions" in capsys.readouterr().out
    assert main(["prune", "--older-than", "0s", "--status", "complete", "--backend", url]) == 0
    assert "removed 1 execution " in capsys.readouterr().out
    assert main(["history", prefix, "--backend", url]) == 2


def test_history_keeps_a_transition_cheap() -> None:
    """Deriving events looks at changed steps only: a 5,000-step record costs about
    what a 50-step one does per transition."""
    def per_transition(width: int) -> float:
        spec = {"steps": [{"id": f"s{i}", "fn": "f"} for i in range(width)]}
        v1 = new_record(spec)
        v2 = advance(v1, 1.0)[0].evolve(version=2, updated_at=1.0)
        v3 = on_step_result(v2, "s0", {}, 0, 2.0)[0].evolve(version=3, updated_at=2.0)
        start = time.perf_counter()
        for _ in range(200):
            events_between(v2, v3)
        return (time.perf_counter() - start) / 200

    small, large = per_transition(50), per_transition(5000)
    assert large < small * 40 + 1e-4, (small, large)  # 100x the steps, far less than 100x
