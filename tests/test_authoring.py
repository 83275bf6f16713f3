"""Authoring steps in Python: ``runfox.Registry``, ``runfox.context()``, async steps.

Binding errors and return shaping are checked on the registry directly (it is an
executor); context fields, async steps and the ``cancelled`` flag through the real
harnesses: ``Workflow.run`` (``InProcessWorker``), ``Worker`` with thread slots
(sync and async steps) and with process slots, and a ``Worker`` on SQLite. The
must-show run of one registry through ``wf.run()``, ``runfox run --executor`` and
two ``runfox worker`` processes is at the end (slow).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from authoring_steps import registry as steps

import runfox as rfx
from runfox.authoring import BindingError, NoStepContext, RegistryError, UnknownFunction
from runfox.backend import Backend
from runfox.backend.sql import parts_from_url
from runfox.execution import invoke, is_async
from runfox.status import WorkflowStatus
from runfox.worker import Worker

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "runfox.cli"]


# -- the registry as an executor ---------------------------------------------------


def test_plain_async_and_class_steps_are_called_by_name() -> None:
    assert steps("add", {"x": 2, "y": 3}) == {"result": 5}
    assert steps("scale", {"value": 2, "k": 4}) == {"value": 8}  # async, run to its end
    assert steps("scale", {"value": 2}) == {"value": 2}  # a default fills k
    out = steps("describe", {"value": 7})
    assert out["text"] == "total=7"


def test_decorator_returns_the_target_unchanged() -> None:
    from authoring_steps import Describe, add, scale_async

    assert add(1, 2) == 3
    assert asyncio.run(scale_async(3, 2)) == {"value": 6}
    assert Describe().run(1)["text"] == "total=1"


def test_describe_exposes_version_cache_and_parameters() -> None:
    assert steps.describe("scale") == {
        "name": "scale", "origin": "authoring_steps.scale_async", "kind": "async",
        "version": 2, "cache": True,
        "parameters": [{"name": "value", "required": True},
                       {"name": "k", "required": False}]}
    described = steps.describe("describe")  # class attributes configure a class step
    assert (described["kind"], described["version"], described["cache"]) == ("class", 1, None)
    assert [p["name"] for p in described["parameters"]] == ["value"]  # no self


def test_missing_and_unknown_inputs_fail_before_the_call() -> None:
    calls: list[int] = []
    reg = rfx.Registry("tests.reg")

    @reg.step
    def f(a: int, b: int = 1) -> int:
        calls.append(a)
        return a + b

    with pytest.raises(BindingError, match=r"step 'f' \(test_authoring\..*f\): missing "
                                           r"required input 'a'"):
        reg("f", {"b": 2})
    with pytest.raises(BindingError, match=r"unknown input 'c'; the function takes 'a', 'b'"):
        reg("f", {"a": 1, "c": 2})
    assert calls == []
    # Through the harness it is a failed attempt with the error's own type.
    output = invoke(reg, "f", {"b": 2})
    assert output["ok"] is False and output["error_type"] == "BindingError"
    assert "missing required input 'a'" in output["error"]


def test_var_keyword_takes_extra_inputs() -> None:
    reg = rfx.Registry()

    @reg.step
    def g(a: int, **rest: Any) -> dict[str, Any]:
        return {"a": a, "rest": rest}

    assert reg("g", {"a": 1, "z": 2, "y": 3}) == {"a": 1, "rest": {"z": 2, "y": 3}}


@pytest.mark.parametrize(("value", "output"), [
    (5, {"result": 5}), (None, {"result": None}), ([1, 2], {"result": [1, 2]}),
    ("s", {"result": "s"}), ({"k": 1}, {"k": 1}),
])
def test_a_return_value_that_is_not_a_dict_becomes_result(value: Any, output: Any) -> None:
    reg = rfx.Registry()
    reg.add(lambda: value, name="v")
    assert reg("v", {}) == output


def test_unknown_fn_names_the_registry_and_suggests() -> None:
    with pytest.raises(UnknownFunction) as info:
        steps("scael", {})
    text = str(info.value)
    assert "fn 'scael' is not registered in registry 'authoring_steps'" in text
    assert "registered: add, describe" in text and "did you mean 'scale'?" in text
    assert not is_async(steps, "scael")  # the sync path reports it
    output = invoke(steps, "scael", {})
    assert output["error_type"] == "UnknownFunction"


def test_registration_errors_name_the_function_and_module() -> None:
    reg = rfx.Registry("tests.reg")

    @reg.step(name="same")
    def one() -> int:
        return 1

    with pytest.raises(RegistryError, match=r"fn 'same' is registered twice: "
                                            r"test_authoring\..*one and test_authoring\..*two"):
        @reg.step(name="same")
        def two() -> int:
            return 2

    with pytest.raises(RegistryError, match=r"class test_authoring\..*NoRun has no run"):
        @reg.step
        class NoRun:
            pass

    with pytest.raises(RegistryError, match=r"must be constructible without arguments"):
        @reg.step
        class Needs:
            def __init__(self, x: int) -> None:
                self.x = x

            def run(self) -> int:
                return self.x

    with pytest.raises(RegistryError, match=r"needs a name"):
        reg.add(lambda: 1)
    with pytest.raises(RegistryError, match=r"cannot register 3 \(int\)"):
        reg.add(3)


def test_a_class_step_is_instantiated_for_every_call() -> None:
    reg = rfx.Registry()

    @reg.step
    class Counter:
        calls = 0

        def __init__(self) -> None:
            self.seen: list[int] = []

        def run(self, n: int) -> dict[str, Any]:
            self.seen.append(n)
            return {"seen": list(self.seen)}

    assert reg("Counter", {"n": 1}) == {"seen": [1]}
    assert reg("Counter", {"n": 2}) == {"seen": [2]}  # no state carried over


def test_pydantic_models_as_annotations() -> None:
    pydantic = pytest.importorskip("pydantic", reason="pydantic is not installed (optional)")

    class Point(pydantic.BaseModel):
        x: int
        y: int

    reg = rfx.Registry()

    @reg.step
    def norm1(p: Point) -> Point:
        return Point(x=abs(p.x), y=abs(p.y))

    assert reg("norm1", {"p": {"x": -1, "y": 2}}) == {"x": 1, "y": 2}
    with pytest.raises(BindingError, match=r"input 'p' is not a valid Point: field 'y'"):
        reg("norm1", {"p": {"x": 1, "y": "many"}})


# -- context ------------------------------------------------------------------------


def test_context_outside_a_step_is_an_error() -> None:
    with pytest.raises(NoStepContext, match="only available inside a step"):
        rfx.context()
    output = invoke(steps, "where", {})  # no harness set it: the step fails cleanly
    assert output["error_type"] == "NoStepContext"


CONTEXT_SPEC = {
    "name": "ctx",
    "steps": [{"id": "w", "fn": "where", "input": {"colour": "red"}},
              {"id": "wa", "fn": "where_async", "input": {}}],
    "outputs": {"w": {"var": "steps.w.output"}, "wa": {"var": "steps.wa.output"}},
}


def check_context(wf_id: str, outcome: dict[str, Any], same_process: bool) -> None:
    w, wa = outcome["w"], outcome["wa"]
    assert (w["execution"], w["step"], w["run_id"], w["attempt"], w["fn"]) == \
        (wf_id, "w", 0, 1, "where")
    assert w["extra"] == ["colour"]
    assert (wa["execution"], wa["step"], wa["fn"]) == (wf_id, "wa", "where_async")
    assert (w["pid"] == os.getpid()) is same_process


def test_context_in_workflow_run() -> None:
    wf = rfx.Workflow.from_dict(CONTEXT_SPEC, Backend(executor=steps), {})
    result = wf.run(timeout=10)
    assert isinstance(result, rfx.Complete), result
    check_context(wf.id, result.outcome, same_process=True)


@pytest.mark.parametrize("processes", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_context_in_worker_threads_loop_and_processes(processes: bool) -> None:
    backend = Backend()
    wf_id = backend.create(CONTEXT_SPEC)
    backend.apply_and_advance(wf_id)
    ref: Any = "authoring_steps:registry" if processes else steps
    Worker(backend, ref, concurrency=2, processes=processes).run(idle_timeout=0.5)
    record = backend.load(wf_id)
    assert record.status is WorkflowStatus.COMPLETE, record.outcome
    check_context(wf_id, record.outcome, same_process=not processes)


def test_a_retry_sees_its_attempt_and_run() -> None:
    reg = rfx.Registry()

    @reg.step
    def flaky() -> dict[str, Any]:
        ctx = rfx.context()
        if ctx.attempt < 2:
            raise RuntimeError("first try")
        return {"attempt": ctx.attempt, "run_id": ctx.run_id}

    spec = {"steps": [{"id": "f", "fn": "flaky", "max_attempts": 2}],
            "outputs": {"f": {"var": "steps.f.output"}}}
    result = rfx.Workflow.from_dict(spec, Backend(executor=reg), {}).run(timeout=10)
    assert result.outcome == {"f": {"attempt": 2, "run_id": 1}}


# -- async steps --------------------------------------------------------------------


def test_async_steps_share_one_loop_thread() -> None:
    reg = rfx.Registry()
    seen: list[tuple[str, str]] = []

    @reg.step
    async def nap(i: int) -> dict[str, Any]:
        seen.append(("async", threading.current_thread().name))
        await asyncio.sleep(0.2)
        return {"i": i}

    @reg.step
    def plain(i: int) -> dict[str, Any]:
        seen.append(("sync", threading.current_thread().name))
        return {"i": i}

    spec = {"steps": [{"id": f"n{i}", "fn": "nap", "input": {"i": i}} for i in range(8)]
            + [{"id": "p", "fn": "plain", "input": {"i": 9}}]}
    backend = Backend()
    wf_id = backend.create(spec)
    backend.apply_and_advance(wf_id)
    started = time.monotonic()
    Worker(backend, reg, concurrency=9, poll_interval=0.02).run(idle_timeout=0.3)
    elapsed = time.monotonic() - started
    assert backend.load(wf_id).status is WorkflowStatus.COMPLETE
    threads = {name for kind, name in seen if kind == "async"}
    assert threads == {"runfox-async"}  # eight coroutines, one thread
    assert {name for kind, name in seen if kind == "sync"} != threads
    assert elapsed < 0.2 * 8  # concurrently, not one after another


def test_async_steps_run_together_in_workflow_run() -> None:
    spec = {"steps": [{"id": f"s{i}", "fn": "slow_async", "input": {"seconds": 0.3}}
                      for i in range(6)]}
    started = time.monotonic()
    result = rfx.Workflow.from_dict(spec, Backend(executor=steps), {}).run(timeout=10)
    assert isinstance(result, rfx.Complete)
    assert time.monotonic() - started < 1.5  # 6 x 0.3 s one after another would be 1.8 s


def test_plain_async_executor_function() -> None:
    async def execute(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"fn": fn, "step": rfx.context().step_id}

    assert is_async(execute, "anything")
    spec = {"steps": [{"id": "a", "fn": "x"}], "outputs": {"a": {"var": "steps.a.output"}}}
    result = rfx.Workflow.from_dict(spec, Backend(executor=execute), {}).run(timeout=10)
    assert result.outcome == {"a": {"fn": "x", "step": "a"}}
    # Called through the sync path, outside any step: run on a new loop, and the
    # missing context is a failed attempt.
    assert invoke(execute, "y", {})["error_type"] == "NoStepContext"


def test_async_timeout_cancels_and_system_exit_is_contained() -> None:
    spec = {"steps": [
        {"id": "slow", "fn": "slow_async", "input": {"seconds": 5}, "timeout": 0.2},
        {"id": "exit", "fn": "exit_async"},
        {"id": "ok", "fn": "scale", "input": {"value": 1}},
    ], "defaults": {"on_dependency_failure": "skip"}}
    backend = Backend()
    wf_id = backend.create(spec)
    backend.apply_and_advance(wf_id)
    worker = Worker(backend, steps, concurrency=3, poll_interval=0.02)
    started = time.monotonic()
    worker.run(idle_timeout=0.3)
    assert time.monotonic() - started < 3
    record = backend.load(wf_id)
    assert record.steps["slow"].error is not None
    assert record.steps["slow"].error["type"] == "TimeoutError"
    assert "cancelled" in record.steps["slow"].error["message"]
    assert record.steps["exit"].error is not None
    assert record.steps["exit"].error["type"] == "SystemExit"
    assert record.steps["ok"].output == {"value": 1}  # the loop lived on


# -- cancelled and heartbeat -----------------------------------------------------------


@pytest.fixture
def sqlite_backend(tmp_path: Path) -> Iterator[Backend]:
    store, runner = parts_from_url(f"sqlite:///{tmp_path / 'runfox.db'}")
    backend = Backend(store=store, runner=runner)
    try:
        yield backend
    finally:
        store.close()
        runner.close()


@pytest.mark.parametrize("fn", ["wait_for_cancel", "wait_for_cancel_async"])
def test_cancelled_flips_when_the_execution_is_cancelled(sqlite_backend: Backend,
                                                        fn: str) -> None:
    backend = sqlite_backend
    wf_id = backend.create({"steps": [{"id": "w", "fn": fn, "input": {"limit": 10}}]})
    backend.apply_and_advance(wf_id)
    worker = Worker(backend, steps, lease=0.6, poll_interval=0.02)
    outputs: list[dict[str, Any]] = []
    original = worker._finished

    def spy(job: Any, output: dict[str, Any]) -> None:
        outputs.append(output)
        original(job, output)

    worker._finished = spy  # type: ignore[method-assign]
    thread = threading.Thread(target=worker.run, kwargs={"idle_timeout": 0.5})
    thread.start()
    time.sleep(0.4)  # the step is running
    cancelled_at = time.monotonic()
    backend.cancel(wf_id, "test")
    thread.join(15)
    assert not thread.is_alive()
    assert outputs and outputs[0]["cancelled"] is True, outputs
    assert time.monotonic() - cancelled_at < 5
    assert backend.load(wf_id).status is WorkflowStatus.CANCELLED


@pytest.mark.slow
def test_cancelled_reaches_a_process_slot() -> None:
    backend = Backend()
    wf_id = backend.create({"steps": [{"id": "w", "fn": "wait_for_cancel",
                                       "input": {"limit": 20}}]})
    backend.apply_and_advance(wf_id)
    worker = Worker(backend, "authoring_steps:registry", processes=True, lease=0.6,
                    poll_interval=0.02)
    outputs: list[dict[str, Any]] = []
    original = worker._finished

    def spy(job: Any, output: dict[str, Any]) -> None:
        outputs.append(output)
        original(job, output)

    worker._finished = spy  # type: ignore[method-assign]
    thread = threading.Thread(target=worker.run, kwargs={"idle_timeout": 0.5})
    thread.start()
    deadline = time.monotonic() + 30
    while not worker._held and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    backend.cancel(wf_id)
    thread.join(30)
    assert outputs and outputs[0]["cancelled"] is True, outputs


def test_heartbeat_without_a_worker_returns_the_flag() -> None:
    spec = {"steps": [{"id": "w", "fn": "wait_for_cancel", "input": {"limit": 0.1}}],
            "outputs": {"w": {"var": "steps.w.output"}}}
    result = rfx.Workflow.from_dict(spec, Backend(executor=steps), {}).run(timeout=10)
    out = result.outcome["w"]
    assert out["cancelled"] is False and out["beats"] > 1


def test_step_heartbeat_renews_the_lease_at_once(sqlite_backend: Backend) -> None:
    """``ctx.heartbeat()`` makes the job due: the runner sees a heartbeat long before
    the worker's own third-of-a-lease schedule would send one."""
    backend = sqlite_backend
    beats: list[float] = []
    runner = backend.runner
    original = runner.heartbeat

    def counting(job: Any, lease: float) -> bool:
        beats.append(time.monotonic())
        return original(job, lease)

    runner.heartbeat = counting  # type: ignore[method-assign]
    reg = rfx.Registry()

    @reg.step
    def beat() -> dict[str, Any]:
        ctx = rfx.context()
        started = time.monotonic()
        ctx.heartbeat()
        time.sleep(0.3)
        return {"started": started}

    wf_id = backend.create({"steps": [{"id": "b", "fn": "beat"}],
                            "outputs": {"b": {"var": "steps.b.output"}}})
    backend.apply_and_advance(wf_id)
    Worker(backend, reg, lease=30.0, poll_interval=0.02).run(idle_timeout=0.3)
    started = backend.load(wf_id).outcome["b"]["started"]
    assert any(0 <= t - started < 0.25 for t in beats), (started, beats)


# -- the must-show run: one registry, three ways -------------------------------------

# No depends_on anywhere: each step depends on the steps its input reads.
MUST_SHOW = {
    "name": "registry-must-show",
    "steps": [
        {"id": "sum", "fn": "add",
         "input": {"x": {"var": "input.x"}, "y": {"var": "input.y"}}},
        {"id": "scaled", "fn": "scale",
         "input": {"value": {"var": "steps.sum.output.result"}, "k": {"var": "input.k"}}},
        {"id": "text", "fn": "describe",
         "input": {"value": {"var": "steps.scaled.output.value"}}},
    ],
    "outputs": {"value": {"var": "steps.scaled.output.value"},
                "text": {"var": "steps.text.output.text"}},
}
EXPECTED = {"value": 20, "text": "total=20"}


def test_must_show_registry_in_workflow_run() -> None:
    result = rfx.Workflow.from_dict(MUST_SHOW, Backend(executor=steps),
                                    {"x": 2, "y": 3, "k": 4}).run(timeout=10)
    assert result.outcome == EXPECTED


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNFOX_")}
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{ROOT / 'tests'}"
    return env


@pytest.mark.slow
def test_must_show_registry_through_runfox_run(tmp_path: Path) -> None:
    import json

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(MUST_SHOW))
    done = subprocess.run([*CLI, "run", str(spec), "--executor", "tests.authoring_steps:registry",
                           "--backend", f"sqlite:///{tmp_path / 'run.db'}",
                           "--input", "x=2", "--input", "y=3", "--input", "k=4", "--quiet"],
                          cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == EXPECTED


@pytest.mark.slow
def test_must_show_registry_through_two_workers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runfox.db'}"
    store, runner = parts_from_url(url)
    backend = Backend(store=store, runner=runner)
    ids = [backend.create(MUST_SHOW, {"x": i, "y": 1, "k": 2}) for i in range(6)]
    for wf_id in ids:
        backend.apply_and_advance(wf_id)
    workers = [subprocess.Popen([*CLI, "worker", "--backend", url, "--executor",
                                 "tests.authoring_steps:registry", "--concurrency", "2",
                                 "--poll-interval", "0.05", "--idle-timeout", "3"],
                                cwd=ROOT, env=cli_env(), stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    try:
        for worker in workers:
            _, err = worker.communicate(timeout=120)
            assert worker.returncode == 0, err
        pids = set()
        for i, wf_id in enumerate(ids):
            record = backend.load(wf_id)
            assert record.status is WorkflowStatus.COMPLETE, record.outcome
            assert record.outcome == {"value": (i + 1) * 2, "text": f"total={(i + 1) * 2}"}
            pids.add(record.steps["text"].output["pid"])
        assert os.getpid() not in pids
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
        store.close()
        runner.close()
