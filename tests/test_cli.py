"""The ``runfox`` command line: every command, its output and its exit code.

Most tests call ``runfox.cli.main`` in this process against a SQLite file; the
ones about signals, the console script and the environment run a subprocess.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cli_executor import wide_spec

from runfox.backend.sql import SqlRunner
from runfox.cli import build_parser, main
from runfox.cli.render import Progress

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
EXECUTOR = "cli_executor:execute"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNFOX_BACKEND", raising=False)
    monkeypatch.delenv("RUNFOX_EXECUTOR", raising=False)
    monkeypatch.setenv("RUNFOX_TEST_LOG", str(tmp_path / "calls.log"))
    return tmp_path


def write_spec(directory: Path, spec: dict[str, Any], name: str = "wf.yaml") -> str:
    path = directory / name
    path.write_text(json.dumps(spec), encoding="utf-8")  # JSON is YAML
    return str(path)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def child_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RUNFOX_BACKEND", "RUNFOX_EXECUTOR")}
    return {**env, "PYTHONPATH": f"{TESTS}{os.pathsep}{ROOT}",
            "RUNFOX_TEST_LOG": str(tmp_path / "calls.log"), **extra}


ECHO = {"name": "echo", "steps": [{"id": "e", "fn": "echo", "input": {"got": {"var": "input"}}}],
        "outputs": {"got": {"var": "steps.e.output.got"}}}


# -- run -------------------------------------------------------------------------------


def test_run_prints_the_outcome_and_exits_0(workdir: Path, capsys: Any) -> None:
    spec = write_spec(workdir, wide_spec(4))
    code, out, err = cli(capsys, "run", spec, "--executor", EXECUTOR, "--input", "n=3",
                         "--input", "tag=t1")
    assert code == 0, err
    assert json.loads(out) == {"total": 3 * 10}
    assert "progress: 6/6 complete" in err  # not a TTY: plain lines
    assert (workdir / "runfox.db").exists()  # the default backend


def test_input_values_are_json_when_they_parse(workdir: Path, capsys: Any) -> None:
    spec = write_spec(workdir, ECHO)
    code, out, err = cli(capsys, "run", spec, "--executor", EXECUTOR, "-q",
                         "--inputs", '{"a": 1, "b": "x", "c": [1]}',
                         "--input", "b=2", "--input", "s=hello", "--input", 'l=[1, "a"]',
                         "--input", "o={bad json", "--input", "t=true", "--input", "e=",
                         "--input", "q=\"7\"", "--input", "eq=a=b")
    assert code == 0, err
    assert json.loads(out)["got"] == {"a": 1, "b": 2, "c": [1], "s": "hello", "l": [1, "a"],
                                      "o": "{bad json", "t": True, "e": "", "q": "7",
                                      "eq": "a=b"}
    assert "progress" not in err  # -q


def test_inputs_from_a_file(workdir: Path, capsys: Any) -> None:
    (workdir / "in.json").write_text('{"k": {"deep": [1, 2]}}')
    code, out, _ = cli(capsys, "run", write_spec(workdir, ECHO), "--executor", EXECUTOR, "-q",
                       "--inputs", "@in.json")
    assert code == 0
    assert json.loads(out)["got"] == {"k": {"deep": [1, 2]}}


@pytest.mark.parametrize(("argv", "message"), [
    (["--input", "novalue"], "must look like KEY=VALUE"),
    (["--inputs", "[1, 2]"], "must be a JSON object"),
    (["--inputs", "{nope"], "not valid JSON"),
    (["--inputs", "@missing.json"], "missing.json"),
    (["--workers", "0"], "--workers must be >= 1"),
])
def test_bad_inputs_are_usage_errors(workdir: Path, capsys: Any, argv: list[str],
                                     message: str) -> None:
    code, out, err = cli(capsys, "run", write_spec(workdir, ECHO), "--executor", EXECUTOR,
                         *argv)
    assert code == 2
    assert out == ""
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_halt_exits_3_with_the_halt_payload(workdir: Path, capsys: Any) -> None:
    spec = {"steps": [{"id": "e", "fn": "echo", "input": {"score": {"var": "input.score"}},
                       "branch": [{"condition": {">": [{"var": "score"}, 5]},
                                   "action": "halt", "result": {"why": "too high"}}]},
                      {"id": "after", "fn": "echo", "depends_on": ["e"]}]}
    code, out, err = cli(capsys, "run", write_spec(workdir, spec), "--executor", EXECUTOR,
                         "--input", "score=9", "-q")
    assert code == 3
    assert json.loads(out) == {"why": "too high"}
    assert "halted" in err


def test_a_failure_exits_1_with_the_reason(workdir: Path, capsys: Any) -> None:
    spec = {"steps": [{"id": "b", "fn": "boom", "max_attempts": 2}]}
    code, out, err = cli(capsys, "run", write_spec(workdir, spec), "--executor", EXECUTOR, "-q")
    assert code == 1
    outcome = json.loads(out)
    assert outcome["step"] == "b" and outcome["attempts"] == 2
    assert outcome["error"]["type"] == "RuntimeError"
    assert "failed" in err


@pytest.mark.parametrize(("text", "where"), [
    ("steps: [\n  {id: a, fn: x\n", "wf.yaml:"),
    ("steps:\n  - id: a\n    fn: x\n    depends_on: [ghost]\n", "ghost"),
    ("- just\n- a list\n", "must be a mapping"),
])
def test_a_bad_spec_prints_its_problem_under_the_subject_and_exits_2(
        workdir: Path, capsys: Any, text: str, where: str) -> None:
    (workdir / "wf.yaml").write_text(text)
    for command in (["run", "wf.yaml", "--executor", EXECUTOR], ["start", "wf.yaml"],
                    ["graph", "wf.yaml"]):
        code, out, err = cli(capsys, *command)
        assert code == 2
        assert out == ""
        head, *problems = err.strip().splitlines()
        assert head == "runfox: error: invalid workflow spec wf.yaml:", err
        assert len(problems) == 1 and problems[0].startswith("  ")
        assert where in problems[0]
        assert "Traceback" not in err
    assert not (workdir / "runfox.db").exists()  # refused before the backend was opened


def test_spec_errors_are_printed_one_per_line(workdir: Path, capsys: Any) -> None:
    spec = {"steps": [{"id": "a", "fn": "x", "depends_on": ["ghost"]},
                      {"id": "a", "fn": "y"}, {"id": "c"}]}
    code, out, err = cli(capsys, "graph", write_spec(workdir, spec))
    assert code == 2 and out == ""
    head, *problems = err.rstrip("\n").split("\n")
    assert head.startswith("runfox: error: invalid workflow spec ") and head.endswith(":")
    assert len(problems) >= 3, err
    assert all(line.startswith("  ") and line.strip() for line in problems)
    assert any("ghost" in line for line in problems)


def test_other_errors_stay_one_line(workdir: Path, capsys: Any) -> None:
    code, _, err = cli(capsys, "list", "--limit", "0")
    assert code == 2 and err == "runfox: error: --limit must be >= 1\n"


def test_debug_adds_the_traceback(workdir: Path, capsys: Any) -> None:
    code, _, err = cli(capsys, "run", "missing.yaml", "--debug")
    assert code == 2
    assert "Traceback" in err and "no such file" in err


@pytest.mark.parametrize(("ref", "message"), [
    ("cli_executor:nothing_here", "has no attribute 'nothing_here'"),
    ("no_such_module_xyz:run", "cannot import 'no_such_module_xyz'"),
    ("cli_executor", "must look like"),
])
def test_an_unknown_executor_is_one_line_and_exit_2(workdir: Path, capsys: Any, ref: str,
                                                     message: str) -> None:
    spec = write_spec(workdir, ECHO)
    for command in (["run", spec], ["worker"]):
        code, _, err = cli(capsys, *command, "--executor", ref)
        assert code == 2
        assert message in err and len(err.strip().splitlines()) == 1
        assert "Traceback" not in err


def test_an_unreachable_database_exits_4_with_a_masked_url(workdir: Path, capsys: Any) -> None:
    url = "postgresql+psycopg://app:hunter2@127.0.0.1:1/runfox"
    spec = write_spec(workdir, ECHO)
    for command in (["run", spec, "--executor", EXECUTOR], ["start", spec], ["status", "x#y"],
                    ["list"], ["cancel", "x#y"], ["worker", "--executor", EXECUTOR]):
        code, out, err = cli(capsys, *command, "--backend", url)
        assert code == 4, (command, err)
        assert "hunter2" not in err and "app:***@127.0.0.1:1" in err
        assert "refused" in err.lower()
        assert len(err.strip().splitlines()) == 1 and out == ""


def test_an_unknown_backend_scheme_is_a_usage_error(workdir: Path, capsys: Any) -> None:
    code, _, err = cli(capsys, "list", "--backend", "ftp://x")
    assert code == 2 and "unknown backend URL" in err


def test_run_timeout_exits_5_and_leaves_the_execution(workdir: Path, capsys: Any) -> None:
    # no --executor: the jobs wait for `runfox worker` processes, and none is running
    code, out, err = cli(capsys, "run", write_spec(workdir, ECHO), "--timeout", "0.5", "-q")
    assert code == 5 and out == ""
    wf_id = re.search(r"execution (\S+)", err).group(1)  # type: ignore[union-attr]
    code, out, _ = cli(capsys, "status", wf_id, "--json")
    assert json.loads(out)["status"] == "in_progress"


def test_run_runs_only_its_own_jobs(workdir: Path, capsys: Any) -> None:
    spec = write_spec(workdir, wide_spec(2))
    code, out, _ = cli(capsys, "start", spec, "--input", "n=1", "--input", "tag=other")
    assert code == 0
    code, out, _ = cli(capsys, "run", spec, "--executor", EXECUTOR, "--input", "n=2",
                       "--input", "tag=mine", "-q")
    assert code == 0 and json.loads(out) == {"total": 6}
    assert " other " not in (workdir / "calls.log").read_text()


# -- start / worker / status / list / cancel ---------------------------------------------


def test_a_queued_start_is_created_by_the_worker(workdir: Path, capsys: Any) -> None:
    # ``runfox start --queue`` (Backend.submit) checks the inputs, prints the id at
    # once and stores a start job only; the worker creates and runs the execution.
    bad = write_spec(workdir, {"steps": [{"id": "a b", "fn": "f"}]}, name="bad.yaml")
    code, _, err = cli(capsys, "start", bad, "--queue")
    assert code != 0 and "steps[0].id" in err  # checked before anything is queued
    spec = write_spec(workdir, wide_spec(2))
    code, _, err = cli(capsys, "start", spec, "--input", "n=1", "--key", "k", "--queue")
    assert code == 2 and "--queue and --key" in err
    code, out, err = cli(capsys, "start", spec, "--input", "n=4", "--input", "tag=q", "--queue")
    assert code == 0, err
    wf_id = out.strip().splitlines()[-1]
    code, out, err = cli(capsys, "status", wf_id)  # not created yet
    assert code == 0 and out.startswith(f"{wf_id}: queued, not created yet"), err
    code, out, _ = cli(capsys, "status", wf_id, "--json")
    assert json.loads(out) == {"id": wf_id, "status": "queued", "start_job": "queued",
                               "deliveries": 0}
    code, _, err = cli(capsys, "status", wf_id + "x")
    assert code != 0 and "no execution matches" in err
    code, _, err = cli(capsys, "worker", "--executor", EXECUTOR, "--idle-timeout", "1",
                       "--poll-interval", "0.02")
    assert code == 0, err
    code, out, _ = cli(capsys, "status", wf_id, "--json")
    status = json.loads(out)
    assert (status["id"], status["status"], status["outcome"]) == (wf_id, "complete",
                                                                   {"total": 4 * 3})


def test_start_then_worker_then_status(workdir: Path, capsys: Any) -> None:
    spec = write_spec(workdir, wide_spec(3))
    code, out, err = cli(capsys, "start", spec, "--input", "n=5", "--input", "tag=s")
    assert code == 0, err
    wf_id = out.strip().splitlines()[-1]
    code, out, _ = cli(capsys, "status", wf_id, "--json")
    status = json.loads(out)
    assert status["id"] == wf_id and status["status"] == "in_progress"
    assert status["outcome"] is None
    assert status["steps"]["p0"] == {**status["steps"]["p0"], "status": "in_progress",
                                     "run_id": 0, "attempts": 1}
    assert status["steps"]["total"]["status"] == "ready"
    assert list(status["steps"]) == ["p0", "p1", "p2", "p3", "total"]

    code, _, err = cli(capsys, "worker", "--executor", EXECUTOR, "--idle-timeout", "1",
                       "--poll-interval", "0.02")
    assert code == 0, err
    code, out, _ = cli(capsys, "status", wf_id, "--json")
    status = json.loads(out)
    assert status["status"] == "complete"
    assert status["outcome"] == {"total": 5 * 6}
    assert {s["status"] for s in status["steps"].values()} == {"complete"}
    assert all(s["run_id"] == 0 for s in status["steps"].values())
    assert status["progress"]["complete"] == 5

    code, out, _ = cli(capsys, "status", wf_id)
    assert code == 0
    assert "status:   complete" in out and 'outcome: {"total": 30}' in out


def test_status_of_an_unknown_execution_exits_2(workdir: Path, capsys: Any) -> None:
    code, out, err = cli(capsys, "status", "nothing#here")
    assert code == 2 and out == ""
    assert err == "runfox: error: no execution matches 'nothing#here'\n"


def test_execution_ids_are_accepted_by_unique_prefix(workdir: Path, capsys: Any) -> None:
    """status, cancel and graph --execution take a prefix of the key or of the execution id."""
    spec = write_spec(workdir, wide_spec(2))
    ids = []
    for _ in range(3):
        _, out, _ = cli(capsys, "start", spec, "--input", "n=1")
        ids.append(out.strip().splitlines()[-1])
    first = ids[0]
    workflow_id, _, execution_id = first.partition("#")
    assert all(wf.partition("#")[0] == workflow_id for wf in ids)  # one definition
    code, out, err = cli(capsys, "status", execution_id[:-2], "--json")
    assert code == 0, err
    assert json.loads(out)["id"] == first
    code, out, err = cli(capsys, "graph", spec, "--execution", first[:-3])
    assert code == 0 and "class s0 in_progress" in out, err
    # The key's prefix shared by all three: ambiguous, with the candidates listed.
    code, out, err = cli(capsys, "cancel", workflow_id[:6])
    assert code == 2 and out == ""
    head, *candidates = err.rstrip("\n").split("\n")
    assert head == (f"runfox: error: {workflow_id[:6]!r} matches several executions; "
                    "give more of it:")
    assert sorted(line.strip() for line in candidates) == sorted(ids)
    code, out, err = cli(capsys, "cancel", execution_id[:-2])
    assert code == 0 and out.strip() == f"{first}: cancelled", err
    code, _, err = cli(capsys, "graph", spec, "--execution", "2001")
    assert code == 2 and err == "runfox: error: --execution: no execution matches '2001'\n"


def test_an_ambiguous_id_lists_five_candidates(workdir: Path, capsys: Any) -> None:
    spec = write_spec(workdir, wide_spec(1))
    ids = [cli(capsys, "start", spec, "--input", "n=1")[1].strip().splitlines()[-1]
           for _ in range(6)]
    code, _, err = cli(capsys, "status", ids[0][:4])
    assert code == 2
    _, *candidates = err.rstrip("\n").split("\n")
    assert [line.strip() for line in candidates] == [*ids[::-1][:5], "(and more)"]


def test_list_filters_and_prints_json(workdir: Path, capsys: Any) -> None:
    spec = write_spec(workdir, ECHO)
    assert cli(capsys, "run", spec, "--executor", EXECUTOR, "-q")[0] == 0
    code, out, _ = cli(capsys, "start", spec)
    started = out.strip().splitlines()[-1]
    code, out, _ = cli(capsys, "list", "--json")
    listed = json.loads(out)
    assert [e["status"] for e in listed] == ["in_progress", "complete"]
    assert listed[0]["id"] == started and listed[0]["name"] == "echo"
    code, out, _ = cli(capsys, "list", "--status", "complete", "--json")
    assert [e["status"] for e in json.loads(out)] == ["complete"]
    code, out, _ = cli(capsys, "list")
    assert started in out and out.startswith("ID")
    code, out, _ = cli(capsys, "list", "--status", "halted")
    assert out.strip() == "no executions"
    code, _, _ = cli(capsys, "list", "--limit", "0")
    assert code == 2


def test_list_rejects_an_unknown_status(workdir: Path, capsys: Any) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["list", "--status", "sleeping"])
    assert caught.value.code == 2


def test_cancel_stops_dispatch(workdir: Path, capsys: Any) -> None:
    code, out, _ = cli(capsys, "start", write_spec(workdir, wide_spec(2)), "--input", "n=1")
    wf_id = out.strip().splitlines()[-1]
    code, out, _ = cli(capsys, "cancel", wf_id, "--reason", "not today")
    assert code == 0 and out.strip() == f"{wf_id}: cancelled"
    runner = SqlRunner(f"sqlite:///{workdir / 'runfox.db'}")
    try:
        assert runner.list_pending_jobs() == []  # the queued job was dropped
    finally:
        runner.close()
    code, out, _ = cli(capsys, "status", wf_id, "--json")
    status = json.loads(out)
    assert status["status"] == "cancelled"
    assert "not today" in json.dumps(status["outcome"])
    code, out, _ = cli(capsys, "cancel", wf_id)
    assert code == 0 and "already cancelled" in out


# -- graph ---------------------------------------------------------------------------------


def test_graph_mermaid_and_dot(workdir: Path, capsys: Any) -> None:
    spec = write_spec(workdir, wide_spec(2))
    code, out, _ = cli(capsys, "graph", spec)
    assert code == 0
    assert out.splitlines()[0] == "flowchart TD"
    assert "s0 --> s1" in out and "s2 --> s3" in out and "classDef" not in out
    code, out, _ = cli(capsys, "graph", spec, "--format", "dot")
    assert out.startswith('digraph "wide-2" {') and '"p0" -> "p1";' in out
    assert out.rstrip().endswith("}")


def test_graph_colours_an_execution(workdir: Path, capsys: Any) -> None:
    spec = write_spec(workdir, wide_spec(2))
    _, out, _ = cli(capsys, "start", spec, "--input", "n=1")
    wf_id = out.strip().splitlines()[-1]
    code, out, _ = cli(capsys, "graph", spec, "--execution", wf_id)
    assert code == 0
    assert "classDef in_progress fill:#fff59d" in out and "class s0 in_progress" in out
    assert "class s1,s2,s3 ready" in out
    code, out, _ = cli(capsys, "graph", spec, "--execution", wf_id, "--format", "dot")
    assert ('"p0" [label="p0\\npart\\n[in_progress]", fillcolor="#fff59d", '
            'tooltip="in_progress"];') in out
    other = write_spec(workdir, ECHO, "other.yaml")
    code, _, err = cli(capsys, "graph", other, "--execution", wf_id)
    assert code == 2 and "another definition" in err


# -- presentation ----------------------------------------------------------------------------


def test_progress_draws_a_bar_on_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress(stream, tty=True, width=10)
    counts = {"total": 4, "complete": 2, "in_progress": 1, "retry": 0, "failed": 0}
    progress.update(counts)
    progress.update(counts)
    progress.finish()
    text = stream.getvalue()
    assert text.count("\r[#####.....] 2/4 complete, 1 running") == 2
    assert text.endswith("\n")


def test_progress_prints_plain_lines_only_on_change() -> None:
    stream = io.StringIO()
    progress = Progress(stream, tty=False)
    counts = {"total": 2, "complete": 0, "in_progress": 1, "retry": 0, "failed": 0}
    progress.update(counts)
    progress.update(counts)
    progress.update({**counts, "complete": 1, "retry": 1, "in_progress": 0})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "1 retrying" in lines[1]
    assert "\r" not in stream.getvalue()


# -- subprocesses: the console script, environment, signals ------------------------------------


def test_the_console_script_and_the_environment(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("runfox")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "runfox.cli"]
    spec = write_spec(tmp_path, wide_spec(2))
    env = child_env(tmp_path, RUNFOX_BACKEND=f"sqlite:///{tmp_path / 'env.db'}",
                    RUNFOX_EXECUTOR=EXECUTOR)
    done = subprocess.run([*command, "run", spec, "--input", "n=2"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"total": 6}
    assert (tmp_path / "env.db").exists() and not (tmp_path / "runfox.db").exists()
    usage = subprocess.run([*command, "--help"], env=env, capture_output=True, text=True,
                           timeout=60)
    assert usage.returncode == 0 and "exit codes" in usage.stdout


def _wait_for(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def _log_lines(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize("signals", [1, 2])
def test_worker_signals(tmp_path: Path, signals: int) -> None:
    """One SIGTERM lets the running job finish; a second releases it at once."""
    db = f"sqlite:///{tmp_path / 'runfox.db'}"
    spec = write_spec(tmp_path, {"steps": [{"id": "s", "fn": "slow", "input": {
        "i": 1, "n": 1, "seconds": 3, "tag": "sig", "step": "s"}}]})
    env = child_env(tmp_path)
    base = [sys.executable, "-m", "runfox.cli"]
    started = subprocess.run([*base, "start", spec, "--backend", db], env=env,
                             capture_output=True, text=True, timeout=120, check=True)
    wf_id = started.stdout.strip().splitlines()[-1]
    worker = subprocess.Popen([*base, "worker", "--backend", db, "--executor", EXECUTOR,
                               "--poll-interval", "0.05", "--lease", "30"],
                              env=env, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: any(" start " in line for line in _log_lines(tmp_path)))
        for _ in range(signals):
            worker.send_signal(signal.SIGTERM)
            time.sleep(0.2)
        _, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err
    assert "finishing running jobs" in err
    status = json.loads(subprocess.run([*base, "status", wf_id, "--json", "--backend", db],
                                       env=env, capture_output=True, text=True, timeout=120,
                                       check=True).stdout)
    runner = SqlRunner(db)
    try:
        pending = runner.list_pending_jobs()
    finally:
        runner.close()
    if signals == 1:  # finished and applied before exiting
        assert "releasing" not in err
        assert status["status"] == "complete"
        assert any(" end " in line for line in _log_lines(tmp_path))
        assert pending == []
    else:  # given back: claimable now, not after the 30 s lease
        assert "releasing running jobs" in err
        assert status["steps"]["s"]["status"] == "in_progress"
        assert [j.step_id for j in pending] == ["s"]


def test_deployment_recipes_run_valid_worker_commands() -> None:
    parser = build_parser()
    workers = ROOT / "workers"
    commands = []
    unit = (workers / "runfox-worker@.service").read_text()
    commands.append(re.search(r"^ExecStart=\S*runfox (worker.*)$", unit, re.M).group(1))  # type: ignore[union-attr]
    procfile = (workers / "Procfile").read_text()
    commands.append(re.search(r"^worker: runfox (worker.*)$", procfile, re.M).group(1))  # type: ignore[union-attr]
    container = (workers / "Containerfile").read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (.*)$", container, re.M).group(1))  # type: ignore[union-attr]
    cmd = json.loads(re.search(r"^CMD (.*)$", container, re.M).group(1))  # type: ignore[union-attr]
    assert entry == ["runfox", "worker"]
    commands.append(shlex.join(["worker", *cmd]))
    for command in commands:
        args = parser.parse_args(shlex.split(command))
        assert args.command == "worker" and args.concurrency >= 1


def test_sigterm_stops_an_idle_worker_promptly(tmp_path: Path) -> None:
    """A signal landing while the worker loop waits must not deadlock it.

    The loop waits on an Event between polls; setting that Event from a signal
    handler in the same thread can hang forever, so a tight poll interval and
    several tries make the window likely to be hit.
    """
    db = f"sqlite:///{tmp_path / 'runfox.db'}"
    env = child_env(tmp_path)
    for _ in range(3):
        worker = subprocess.Popen([sys.executable, "-m", "runfox.cli", "worker", "--backend", db,
                                   "--executor", EXECUTOR, "--poll-interval", "0.001"],
                                  env=env, stderr=subprocess.PIPE, text=True)
        try:
            assert worker.stderr is not None
            for line in worker.stderr:  # wait until the loop runs
                if "serving" in line:
                    break
            time.sleep(0.3)
            worker.send_signal(signal.SIGTERM)
            _, err = worker.communicate(timeout=30)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
                pytest.fail("runfox worker hung after SIGTERM")
        assert worker.returncode == 0, err


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(),
                    reason="counts context switches in /proc")
def test_an_idle_worker_s_main_thread_sleeps_until_a_signal(tmp_path: Path) -> None:
    """The main thread waits for a signal or the loop's end, not in 0.1 s joins:
    over 2 idle seconds it wakes at most a couple of times (it was 20), and a
    SIGTERM still stops the worker at once."""
    db = f"sqlite:///{tmp_path / 'runfox.db'}"
    worker = subprocess.Popen([sys.executable, "-m", "runfox.cli", "worker", "--backend", db,
                               "--executor", EXECUTOR], env=child_env(tmp_path),
                              stderr=subprocess.PIPE, text=True)
    try:
        assert worker.stderr is not None
        for line in worker.stderr:
            if "serving" in line:
                break
        status = Path(f"/proc/{worker.pid}/task/{worker.pid}/status")

        def switches() -> int:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines()
                          if ":" in line)
            return int(fields["voluntary_ctxt_switches"]) + \
                int(fields["nonvoluntary_ctxt_switches"])

        time.sleep(0.5)
        before = switches()
        time.sleep(2.0)
        assert switches() - before <= 3
        sent = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
        assert time.monotonic() - sent < 5.0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0, err
    assert "SIGTERM: finishing running jobs" in err


def test_a_signal_stops_the_worker_loop_in_process(workdir: Path, capsys: Any,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """The handler only records the signal; the main thread stops the loop."""
    fired = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: fired.set())  # until the worker's own

    def send() -> None:
        while not any(t.name == "runfox-worker-loop" for t in threading.enumerate()):
            time.sleep(0.01)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        with caplog.at_level(logging.INFO, logger="runfox.cli"):
            code, _, _ = cli(capsys, "worker", "--executor", EXECUTOR, "--poll-interval",
                             "0.001", "--idle-timeout", "60")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 0
    assert not fired.is_set()  # the worker's handler got it, and put the old one back
    assert "SIGTERM: finishing running jobs" in caplog.text


def test_the_readme_example_runs_on_the_embedded_default(tmp_path: Path) -> None:
    """The README's first command, from the repository root, with no --backend."""
    env = child_env(tmp_path)
    env["PYTHONPATH"] = str(ROOT)  # only runfox itself; the example comes from the cwd
    scratch = tmp_path / "checkout"
    scratch.mkdir()
    (scratch / "examples").symlink_to(ROOT / "examples")
    done = subprocess.run([sys.executable, "-m", "runfox.cli", "run",
                           "examples/greeting/workflow.yaml", "--executor",
                           "examples.greeting.tasks:execute", "--input", "name=world"],
                          cwd=scratch, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"letters": 10, "text": "HELLO, WORLD"}
    assert (scratch / "runfox.db").exists()


def test_a_worker_with_processes_runs_jobs_in_child_processes(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'runfox.db'}"
    env = child_env(tmp_path)
    base = [sys.executable, "-m", "runfox.cli"]
    spec = write_spec(tmp_path, wide_spec(4))
    started = subprocess.run([*base, "start", spec, "--backend", db, "--input", "n=2",
                              "--input", "tag=proc"], env=env, capture_output=True, text=True,
                             timeout=120, check=True)
    wf_id = started.stdout.strip().splitlines()[-1]
    worker = subprocess.Popen([*base, "worker", "--backend", db, "--executor", EXECUTOR,
                               "--processes", "--concurrency", "2", "--poll-interval", "0.02",
                               "--idle-timeout", "2"], env=env, stderr=subprocess.PIPE,
                              text=True)
    _, err = worker.communicate(timeout=300)
    assert worker.returncode == 0, err
    assert "concurrency 2, processes" in err
    status = json.loads(subprocess.run([*base, "status", wf_id, "--json", "--backend", db],
                                       env=env, capture_output=True, text=True, timeout=120,
                                       check=True).stdout)
    assert status["status"] == "complete" and status["outcome"] == {"total": 20}
    pids = {int(line.split()[0]) for line in _log_lines(tmp_path)}
    assert pids and worker.pid not in pids  # the executor ran in the pool's processes


# -- status of large outputs (payloads by reference) ------------------------------------


def _stored_keys(path: Path) -> set[str]:
    import sqlite3

    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT payload_key FROM runfox_payloads")}


def test_status_describes_each_offloaded_key_of_an_output_by_its_own_blob(
        workdir: Path, capsys: Any) -> None:
    from runfox import Workflow
    from runfox.backend import Backend
    from runfox.backend.sql import parts_from_url
    from runfox.payloads import encode, make_ref
    from runfox.testing import large_text

    path = workdir / "keys.db"
    url = f"sqlite:///{path}?offload=1000"
    rows = [{"id": i, "name": f"user-{i:05d}"} for i in range(3000)]
    text = large_text(20_000, 3)

    def executor(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"rows": rows, "text": text, "n": 1}

    spec = {"name": "keys", "steps": [{"id": "big", "fn": "big"}]}
    store, runner = parts_from_url(url)
    try:
        wf = Workflow.from_dict(spec, Backend(store=store, runner=runner, executor=executor,
                                              poll_interval=0.01))
        wf.run(timeout=60)
    finally:
        runner.close()
        store.close()
    rows_ref, text_ref = make_ref(encode(rows)), make_ref(encode(text))
    whole = make_ref(encode({"rows": rows, "text": text, "n": 1}))
    stored = _stored_keys(path)
    assert {rows_ref["$runfox_ref"], text_ref["$runfox_ref"]} == stored  # no whole blob

    code, out, err = cli(capsys, "status", wf.id, "--backend", url)
    assert code == 0, err
    lines = {line.split(": ", 1)[0].strip(): line for line in out.splitlines()}
    assert "steps.big.output" not in lines and whole["$runfox_ref"][:19] not in out
    for where, ref in (("rows", rows_ref), ("text", text_ref)):
        for place in (f"steps.big.output.{where}", f"state.{where}"):  # one blob, both
            assert f"{ref['size'] / 1e3:.1f} KB offloaded ({ref['$runfox_ref'][:19]}..." \
                in lines[place]
    assert "steps.big.output.n" not in lines and len(out) < 3000

    code, out, err = cli(capsys, "status", wf.id, "--backend", url, "--json")
    shown = json.loads(out)["steps"]["big"]["output"]
    assert shown == {"rows": rows_ref, "text": text_ref, "n": 1}

    code, out, err = cli(capsys, "status", wf.id, "--backend", url, "--step", "big")
    output = next(line for line in out.splitlines() if line.startswith("output:"))
    assert '"n": 1' in output and f'"rows": <{rows_ref["size"] / 1e3:.1f} KB offloaded (' \
        f'{rows_ref["$runfox_ref"][:19]}...' in output and text not in output


def test_status_of_an_older_record_with_a_whole_output_reference(
        workdir: Path, capsys: Any) -> None:
    """Schema 10 and before stored a large output as one whole blob. With the blob
    there, status describes it per key (sizes and previews right); with it gone,
    the whole reference is what the record holds, and status names it."""
    from sqldb import write_old_output_record

    from runfox import payloads
    from runfox.backend.sql import SqlStore
    from runfox.testing import large_text

    path = workdir / "old.db"
    url = f"sqlite:///{path}?offload=1000"  # for the CLI, as SqlStore(..., offload=1000)
    big = large_text(5000, 8)
    output = {"n": 1, "blob": big}
    v1 = write_old_output_record(path, output)
    whole = payloads.make_ref(payloads.encode(output))
    # The whole output, and the state key "blob" (then a blob of its own).
    assert _stored_keys(path) == {whole["$runfox_ref"],
                                  payloads.make_ref(payloads.encode(big))["$runfox_ref"]}
    wf_id = v1.workflow_execution_id

    code, out, err = cli(capsys, "status", wf_id, "--backend", url)
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("  steps.root.output.blob:"))
    assert f"{len(payloads.encode(big)) / 1e3:.1f} KB offloaded (sha256:" in line
    assert big[:30] in line

    fresh = SqlStore(f"sqlite:///{path}", offload=1000)
    assert fresh.payloads().delete([whole["$runfox_ref"]]) == 1  # type: ignore[union-attr]
    fresh.close()
    code, out, err = cli(capsys, "status", wf_id, "--backend", url)
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("  steps.root.output:"))
    assert f"{whole['size'] / 1e3:.1f} KB offloaded ({whole['$runfox_ref'][:19]}...)" in line
    assert "steps.root.output: payload sha256:" in out  # the defect, explained
    code, out, err = cli(capsys, "status", wf_id, "--backend", url, "--json")
    assert json.loads(out)["steps"]["root"]["output"] == whole
