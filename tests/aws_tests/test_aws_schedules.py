"""Idempotency keys and schedules on DynamoDB (the contract suites), and the
``schedule_tick`` Lambda entry point."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from runfox.errors import BackendError
from runfox.testing import KeyedStoreContract, ScheduleContract, WorkerRegistryContract

from .conftest import Aws


class TestDynamoDBKeys(KeyedStoreContract):
    @pytest.fixture
    def store(self, aws: Aws) -> Any:
        return aws.store()

    @pytest.fixture
    def reopen(self, aws: Aws) -> Any:
        return aws.store


class TestDynamoDBKeysWithoutIndex(KeyedStoreContract):
    """Key items stay out of the scanning list and find paths."""

    @pytest.fixture
    def store(self, aws: Aws) -> Any:
        return aws.store(status_index=None)


class TestDynamoDBSchedules(ScheduleContract):
    @pytest.fixture
    def store(self, aws: Aws) -> Any:
        return aws.store()


class TestDynamoDBWorkers(WorkerRegistryContract):
    @pytest.fixture
    def store(self, aws: Aws) -> Any:
        return aws.store()


def test_key_items_are_not_executions(aws: Aws) -> None:
    from runfox.backend import Backend
    from runfox.testing import ONE_STEP

    for store in (aws.store(), aws.store(status_index=None)):
        first = Backend(store=store).create(ONE_STEP, key="key-order-7")
        listed = [s.workflow_execution_id for s in store.list_executions()]
        assert listed == [first]
        assert store.find("order") == [] and store.find("key") == []
        assert store.find(first) == [first]


def test_a_store_without_a_task_table_keeps_no_schedules(aws: Aws) -> None:
    with pytest.raises(BackendError, match="tasks_table"):
        aws.store(tasks_table=None).schedules()


# -- the schedule_tick handler -------------------------------------------------------------


def test_a_tick_fires_a_due_schedule_once_however_often_it_is_invoked(aws: Aws) -> None:
    from runfox.backend import Backend
    from runfox.backend.aws.handlers import schedule_tick
    from runfox.schedules import Schedules
    from runfox.testing import ONE_STEP, FakeClock

    clock = FakeClock()
    backends = [Backend(store=aws.store(), runner=aws.runner(), clock=clock) for _ in range(3)]
    Schedules(backends[0]).add("minutely", ONE_STEP, every="1m")
    clock.now += 60.5
    start = threading.Barrier(len(backends))
    answers: list[dict[str, Any]] = []

    def tick(backend: Any) -> None:
        start.wait()
        answers.append(schedule_tick(backend))

    threads = [threading.Thread(target=tick, args=(b,)) for b in backends]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    answers.append(schedule_tick(backends[0]))  # invoked again: nothing more is due
    executions = [s.workflow_execution_id for s in backends[0].store.list_executions()]
    assert len(executions) == 1
    fired = [f for answer in answers for f in answer["fired"]]
    assert fired and {f["execution"] for f in fired} == set(executions)
    assert {f["fire_time"] for f in fired} == {clock.now - 0.5}
    assert answers[-1] == {"fired": []}
    assert [j.workflow_execution_id for j in backends[0].runner.list_pending_jobs()] \
        == executions  # its first job was dispatched, once


def test_the_lambda_schedule_tick_entry_point(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    from runfox.backend import Backend
    from runfox.schedule import iso
    from runfox.schedules import Schedules
    from runfox.testing import ONE_STEP

    from .test_aws_config import _load_entry_module

    monkeypatch.setenv("RUNFOX_BACKEND", aws.backend_url)
    module = _load_entry_module()
    backend = Backend(store=aws.store(), runner=aws.runner())
    at = time.time() + 4.0  # room for a slow first tick on a loaded machine
    Schedules(backend).add("once", ONE_STEP, at=iso(at))
    assert module.schedule_tick({}, None) == {"fired": []}  # not yet due
    assert time.time() < at, "the first tick outlasted the margin: the check proved nothing"
    time.sleep(max(0.0, at - time.time()) + 0.2)
    first = module.schedule_tick({"source": "aws.events"}, None)
    second = module.schedule_tick({"source": "aws.events"}, None)
    (fire,) = first["fired"]
    assert fire["schedule"] == "once" and second == {"fired": []}
    assert [s.workflow_execution_id for s in backend.store.list_executions()] \
        == [fire["execution"]]
    assert Schedules(backend).get("once").next_fire is None


def test_the_template_fires_schedules_every_minute() -> None:
    from .test_aws_config import _template

    template = _template()
    resources = template["Resources"]
    function = resources["ScheduleTickFunction"]["Properties"]
    assert function["Handler"] == "aws_lambda.schedule_tick"
    rule = resources["ScheduleTickRule"]["Properties"]
    assert rule["ScheduleExpression"] == {"Ref": "ScheduleTickSchedule"}
    assert template["Parameters"]["ScheduleTickSchedule"]["Default"] == "rate(1 minute)"
    assert rule["Targets"][0]["Arn"] == {"Fn::GetAtt": ["ScheduleTickFunction", "Arn"]}
    permission = resources["ScheduleTickPermission"]["Properties"]
    assert permission["SourceArn"] == {"Fn::GetAtt": ["ScheduleTickRule", "Arn"]}
