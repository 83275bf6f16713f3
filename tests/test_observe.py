"""Seeing what runs (issue 11, items 3, 5 and 6): live workers, `runfox workers`,
`runfox status` (queued / running / stranded, --watch), per-job log lines, Prometheus
metrics and `runfox graph` pictures; and the kill scenario through the CLI."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from proctools import start_worker
from test_cli import EXECUTOR, child_env, cli, write_spec

from runfox.backend import Backend, InMemoryStore, InProcessRunner
from runfox.cli.commands import open_backend
from runfox.worker import Worker

SLOW = {"name": "slowone", "steps": [
    {"id": "slow", "fn": "slow", "input": {"seconds": {"var": "input.seconds"}, "i": 1,
                                           "n": 1, "tag": "k", "step": "slow"}}]}

LOOPY = {"name": "loopy", "steps": [
    {"id": "a", "fn": "echo", "input": {"x": 1}},
    {"id": "b", "fn": "echo", "input": {"x": 2}, "depends_on": ["a"],
     "branch": [{"condition": {"==": [{"var": "x"}, 3]}, "action": "halt"},
                {"condition": {"==": [{"var": "x"}, 4]}, "action": "complete"},
                {"condition": {"==": [{"var": "x"}, 5]},
                 "action": {"set": "steps.a.status", "value": "ready"}}]},
    {"id": "c", "fn": "echo", "input": {"x": 3}, "depends_on": ["b"]}]}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNFOX_BACKEND", raising=False)
    monkeypatch.delenv("RUNFOX_EXECUTOR", raising=False)
    monkeypatch.setenv("RUNFOX_TEST_LOG", str(tmp_path / "calls.log"))
    return tmp_path


def _start(capsys: Any, spec: str, *inputs: str) -> str:
    code, out, err = cli(capsys, "start", spec, *inputs)
    assert code == 0, err
    return str(out.strip().splitlines()[-1])


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# -- status: queued, then running -----------------------------------------------------


def test_status_says_queued_then_running_by_whom(workdir: Path, capsys: Any) -> None:
    spec = write_spec(workdir, SLOW)
    wf_id = _start(capsys, spec, "--input", "seconds=1.5")
    code, out, _ = cli(capsys, "status", wf_id[-12:])  # a prefix of the key will not do
    assert code == 2
    code, out, _ = cli(capsys, "status", wf_id)
    assert code == 0
    assert "slow  queued" in out and "waiting for a worker" in out
    code, out, _ = cli(capsys, "status", wf_id, "--json")
    assert json.loads(out)["steps"]["slow"]["job"]["state"] == "queued"

    backend = open_backend("sqlite:///runfox.db")
    worker = Worker(backend, EXECUTOR, lease=3.0, poll_interval=0.02)
    thread = threading.Thread(target=worker.run, kwargs={"idle_timeout": 0.5})
    thread.start()
    try:
        def running() -> str | None:
            _, text, _ = cli(capsys, "status", wf_id)
            return text if "held by worker" in text else None

        out = _wait(running, 10, "the step to be held")
        assert "slow  running" in out
        assert f"held by worker {worker.id} since" in out and "lease until" in out
        code, out, _ = cli(capsys, "workers", "--json")
        [row] = json.loads(out)
        assert row["id"] == worker.id and row["state"] == "alive"
        assert row["executor"] == EXECUTOR and row["interval"] == 1.0
        assert list(row["jobs"]) == [f"{wf_id}#slow#0"]
        code, out, _ = cli(capsys, "workers")
        assert worker.id in out and "alive" in out and f"holds {wf_id}#slow#0" in out
    finally:
        thread.join(20)
        backend.store.close()
        backend.runner.close()
    code, out, _ = cli(capsys, "workers")
    assert out.strip() == "no workers registered"  # a clean stop removes the row
    code, out, _ = cli(capsys, "status", wf_id)
    assert "status:   complete" in out and "jobs:" not in out


def test_status_watch_repeats_until_the_end(workdir: Path, capsys: Any) -> None:
    spec = write_spec(workdir, SLOW)
    wf_id = _start(capsys, spec, "--input", "seconds=0.3")
    backend = open_backend("sqlite:///runfox.db")
    worker = Worker(backend, EXECUTOR, lease=3.0, poll_interval=0.02)
    thread = threading.Thread(target=worker.run, kwargs={"idle_timeout": 0.5})
    thread.start()
    try:
        code, out, _ = cli(capsys, "status", wf_id, "--watch", "--interval", "0.1")
    finally:
        thread.join(20)
        backend.store.close()
        backend.runner.close()
    assert code == 0
    blocks = out.split(f"id:       {wf_id}\n")[1:]
    assert len(blocks) >= 2 and "\x1b[" not in out  # not a terminal: plain blocks
    assert "status:   in_progress" in blocks[0] and "status:   complete" in blocks[-1]


# -- per-job log lines and --debug ---------------------------------------------------------


def test_one_info_line_per_job(caplog: pytest.LogCaptureFixture) -> None:
    def executor(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        if fn == "bad":
            raise KeyError("nope")
        return {"fine": True}

    backend = Backend(store=InMemoryStore(), runner=InProcessRunner())
    wf_id = backend.create({"name": "two", "steps": [
        {"id": "good", "fn": "good"},
        {"id": "worse", "fn": "bad", "max_attempts": 1}]}, {})
    backend.apply_and_advance(wf_id)
    with caplog.at_level(logging.INFO, logger="runfox.worker"):
        Worker(backend, executor, poll_interval=0.01).run(max_jobs=2)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("job ")]
    assert len(lines) == 2
    good = next(line for line in lines if " step good " in line)
    bad = next(line for line in lines if " step worse " in line)
    assert good.startswith(f"job {wf_id} step good attempt 1: ok in ")
    assert bad.startswith(f"job {wf_id} step worse attempt 1: error KeyError in ")


def test_global_debug_works_before_the_command(workdir: Path, capsys: Any) -> None:
    code, out, _err = cli(capsys, "--debug", "workers")
    assert code == 0 and out.strip() == "no workers registered"


# -- metrics -----------------------------------------------------------------------------


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def test_the_metrics_endpoint_counts_steps(workdir: Path) -> None:
    pytest.importorskip("prometheus_client")
    from runfox.metrics import WorkerMetrics

    def executor(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        if fn == "bad":
            raise ValueError("no")
        return {"v": 1}

    backend = Backend(store=InMemoryStore(), runner=InProcessRunner())
    metrics = WorkerMetrics(backend)
    port = metrics.serve(0)
    try:
        wf_id = backend.create({"name": "m", "steps": [
            {"id": "a", "fn": "work"}, {"id": "b", "fn": "work"},
            {"id": "c", "fn": "bad", "max_attempts": 2, "depends_on": ["a"]}]}, {})
        backend.apply_and_advance(wf_id)
        worker = Worker(backend, executor, poll_interval=0.01, metrics=metrics, lease=3.0)
        before = _scrape(port)
        assert before["runfox_queue_depth"] == 2.0
        assert before["runfox_workers_alive"] == 0.0
        seen: dict[str, float] = {}

        def scrape_during() -> None:
            seen.update(_scrape(port))

        thread = threading.Thread(target=worker.run, kwargs={"idle_timeout": 0.3})
        thread.start()
        _wait(lambda: backend.store.workers().list(), 5, "the worker row")
        scrape_during()
        thread.join(20)
        after = _scrape(port)
    finally:
        metrics.close()
    assert seen["runfox_workers_alive"] == 1.0
    assert after['runfox_steps_completed_total{fn="work"}'] == 2.0
    assert after['runfox_steps_failed_total{error_type="ValueError",fn="bad"}'] == 2.0
    assert after['runfox_step_duration_seconds_count{fn="work"}'] == 2.0
    assert after["runfox_queue_depth"] == 0.0 and after["runfox_workers_alive"] == 0.0


def test_each_job_is_an_opentelemetry_span() -> None:
    """With the otel extra, a worker reports one span per job it ran, with its outcome."""
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # once per process; later calls are ignored

    def executor(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        if fn == "bad":
            raise ValueError("no")
        time.sleep(0.05)
        return {"v": 1}

    backend = Backend(store=InMemoryStore(), runner=InProcessRunner())
    wf_id = backend.create({"name": "traced", "steps": [
        {"id": "a", "fn": "work"}, {"id": "b", "fn": "bad", "depends_on": ["a"]}]}, {})
    backend.apply_and_advance(wf_id)
    worker = Worker(backend, executor, poll_interval=0.01, lease=3.0)
    worker.run(idle_timeout=0.3)
    spans = {s.attributes["runfox.step"]: s for s in exporter.get_finished_spans()
             if s.attributes and s.attributes.get("runfox.execution") == wf_id}
    if not spans and not isinstance(trace.get_tracer_provider(), TracerProvider):
        pytest.skip("another tracer provider was set earlier in this process")
    assert sorted(spans) == ["a", "b"]
    assert spans["a"].name == "runfox.step work" and spans["a"].attributes["runfox.outcome"] == "ok"
    assert spans["a"].attributes["runfox.worker"] == worker.id
    assert (spans["a"].end_time - spans["a"].start_time) >= 0.04e9  # the executor's time
    assert spans["b"].attributes["runfox.error_type"] == "ValueError"
    assert spans["b"].status.status_code is trace.StatusCode.ERROR


def test_runfox_ui_serves_metrics_too(workdir: Path) -> None:
    """`runfox ui --metrics-port` serves the backend's gauges beside the dashboard."""
    pytest.importorskip("prometheus_client")
    pytest.importorskip("flask")
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"sqlite:///{workdir / 'runfox.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "runfox.cli", "ui", "--backend", url, "--port", "0",
         "--metrics-port", str(port)], env=child_env(workdir), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        scraped = _wait(lambda: _try_scrape(port), 20, "the ui's metrics endpoint")
        assert scraped["runfox_queue_depth"] == 0.0
        assert scraped["runfox_workers_alive"] == 0.0
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)  # reaped: no "still running" warning when it is collected


def _try_scrape(port: int) -> dict[str, float] | None:
    try:
        return _scrape(port)
    except OSError:
        return None


def test_metrics_port_without_prometheus_client_is_a_clear_error(
        workdir: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    code, _, err = cli(capsys, "worker", "--executor", EXECUTOR, "--metrics-port", "0",
                       "--max-jobs", "1")
    assert code == 2
    assert "pip install 'runfox[metrics]'" in err


# -- graph -----------------------------------------------------------------------------------


def test_graph_draws_status_legend_and_branch_edges(workdir: Path, capsys: Any) -> None:
    spec = write_spec(workdir, LOOPY)
    code, out, err = cli(capsys, "run", spec, "--executor", EXECUTOR, "-q")
    assert code == 0, err
    code, out, _ = cli(capsys, "list", "--json")
    wf_id = json.loads(out)[0]["id"]
    code, dot, _ = cli(capsys, "graph", spec, "--format", "dot", "--execution", wf_id[:20],
                       "--rankdir", "LR")
    assert code == 0
    assert "rankdir=LR;" in dot
    assert '"a" [label="a\\necho\\n[complete]", fillcolor="#c8e6c9"' in dot
    assert '"b" -> "__halt__" [label="halt", style=dashed, color="#e53935"' in dot
    assert '"b" -> "c" [label="complete", style=dotted' in dot
    assert '"b" -> "a" [label="set", style=dashed, color="#1e88e5"' in dot
    assert "subgraph cluster_legend" in dot and '"legend_complete" [label="complete"' in dot
    code, mermaid, _ = cli(capsys, "graph", spec, "--execution", wf_id, "--rankdir", "LR")
    assert mermaid.startswith("flowchart LR")
    assert 's0["a<br/>echo<br/><i>complete</i>"]' in mermaid
    assert "s1 -. set .-> s0" in mermaid and "s1 -. halt .-> halt_" in mermaid
    assert "subgraph legend [legend]" in mermaid
    code, plain, _ = cli(capsys, "graph", spec)
    assert "legend" not in plain and "complete</i>" not in plain


def test_graph_svg(workdir: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = write_spec(workdir, LOOPY)
    if shutil.which("dot") is not None:
        code, out, err = cli(capsys, "graph", spec, "--format", "svg")
        assert code == 0, err
        assert "<svg" in out
    monkeypatch.setenv("PATH", "")
    code, out, err = cli(capsys, "graph", spec, "--format", "svg")
    assert code == 2 and out == ""
    assert "needs Graphviz's `dot` program" in err and "--format dot" in err


# -- the kill scenario, through the CLI ---------------------------------------------------------


LEASE = 9.0


@pytest.mark.slow
def test_a_killed_worker_is_seen_dead_and_its_step_stranded(workdir: Path, capsys: Any) -> None:
    """Two `runfox worker` processes (lease 9 s, heartbeat interval 3 s), a 4 s step;
    SIGKILL the one running it. Within 2 intervals `runfox workers` marks it dead and
    `runfox status` names the step and the dead worker; after the lease the other
    worker takes the job back (WorkerLost, then a new run) and the execution ends."""
    url = f"sqlite:///{workdir / 'runfox.db'}"
    spec = write_spec(workdir, SLOW)
    wf_id = _start(capsys, spec, "--backend", url, "--input", "seconds=4")
    env = child_env(workdir)
    log = workdir / "workers.log"
    # Lease 9 s, so a heartbeat every 3 s: the worker is dead after 2 intervals (6 s)
    # while its lease runs 9 s from its last heartbeat, which leaves `runfox status` a
    # few seconds to see the step stranded even on a loaded machine.
    procs = [start_worker(url, env, log, EXECUTOR, concurrency=1, lease=LEASE)
             for _ in range(2)]
    calls = workdir / "calls.log"
    try:
        def first_start() -> int | None:
            if not calls.exists():
                return None
            starts = [line.split() for line in calls.read_text().splitlines()]
            pids = [int(p[0]) for p in starts if p[1] == "start"]
            return pids[0] if pids else None

        holder = _wait(first_start, 30, "the slow step to start")
        victim = next(p for p in procs if p.pid == holder)

        def held() -> str | None:  # its registry row lists the job (1 interval at most)
            _, out, _ = cli(capsys, "workers", "--json", "--backend", url)
            rows = {r["pid"]: r for r in json.loads(out)}
            return rows[holder]["id"] if holder in rows and rows[holder]["jobs"] else None

        dead_id = _wait(held, 2 * LEASE / 3, "the holder's row to list the job")
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        killed = time.monotonic()

        def seen_dead() -> dict[str, Any] | None:
            _, out, _ = cli(capsys, "workers", "--json", "--backend", url)
            rows = {r["id"]: r for r in json.loads(out)}
            return rows if rows[dead_id]["state"] == "dead" else None

        rows = _wait(seen_dead, 15, "the killed worker to be seen dead")
        assert time.monotonic() - killed <= 2 * LEASE / 3 + 0.5  # 2 heartbeat intervals
        assert sum(r["state"] == "alive" for r in rows.values()) == 1
        _, out, _ = cli(capsys, "workers", "--backend", url)
        assert dead_id in out and "dead" in out
        _, out, _ = cli(capsys, "status", wf_id, "--backend", url)
        if "slow  stranded" in out:
            assert f"worker {dead_id} stopped heartbeating" in out
            assert ("the job comes back when its lease ends at" in out
                    or "its lease has ended; the next claim reports it lost" in out)
        else:
            # A loaded machine can take the few seconds between "dead" (2 intervals
            # after the last heartbeat) and the lease's end (3 intervals) on the CLI
            # calls above: the survivor has then already reported the loss and runs
            # the retry, which status shows instead.
            assert "WorkerLost" in out and "slow  running        1" in out, out

        def ended() -> str | None:
            _, out, _ = cli(capsys, "status", wf_id, "--json", "--backend", url)
            data = json.loads(out)
            return out if data["status"] == "complete" else None

        data = json.loads(_wait(ended, 40, "the execution to complete"))
        assert data["steps"]["slow"]["run_id"] == 1  # WorkerLost, then a new run
        starts = [line.split()[0] for line in calls.read_text().splitlines()
                  if line.split()[1] == "start"]
        survivor = next(p for p in procs if p is not victim)
        assert starts == [str(victim.pid), str(survivor.pid)]
        # The history says the same: the lost lease, then a second claim of the step
        # by the other worker, which ran it.
        survivor_id = next(r["id"] for r in rows.values() if r["state"] == "alive")
        _, out, _ = cli(capsys, "history", wf_id, "--json", "--backend", url)
        events = [(e["type"], e.get("step_id"), e.get("run_id"), e.get("details") or {})
                  for e in json.loads(out)]
        assert ("lease_expired", "slow", 0) in [e[:3] for e in events], events
        claims = [d for kind, step, run, d in events if kind == "claimed" and step == "slow"]
        assert len(claims) == 2 and claims[1].get("by") == survivor_id, claims
        assert claims[0].get("by") != survivor_id
        assert [d.get("worker") for kind, step, run, d in events
                if kind == "started" and run == 1] == [survivor_id]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except Exception:
                proc.kill()
                proc.wait(15)  # reaped: no "still running" warning when it is collected
    assert os.path.exists(log)
