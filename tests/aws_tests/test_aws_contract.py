"""The Store, Runner and Backend contract suites on DynamoDB and SQS (moto server)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from contract import BackendContract, CacheContract, RunnerContract, StoreContract

from . import conftest
from .conftest import Aws


class TestDynamoDBStore(StoreContract):
    @pytest.fixture
    def store(self, aws: Aws) -> Any:
        return aws.store()

    @pytest.fixture
    def reopen(self, aws: Aws) -> Any:
        return aws.store


class TestDynamoDBStoreWithoutIndex(StoreContract):
    """Listing falls back to a Scan when the table has no status index."""

    @pytest.fixture
    def store(self, aws: Aws) -> Any:
        return aws.store(status_index=None)


class TestDynamoDBCache(CacheContract):
    @pytest.fixture
    def store(self, aws: Aws) -> Any:
        return aws.store()


class TestSQSRunner(RunnerContract):
    supports_leases = True
    supports_concurrency_limits = True

    @pytest.fixture
    def runner(self, aws: Aws) -> Any:
        # A full key's jobs are offered again at once (the default waits 2 s), as
        # the contract expects of a slot freed by ack, release or a result.
        return aws.runner(slot_wait=0)


class TestAwsBackend(BackendContract):
    @pytest.fixture
    def parts(self, aws: Aws) -> tuple[Any, Any]:
        payloads = aws.offloader()  # as an aws:// URL sets it up: S3 over 32 KiB
        return aws.store(payloads=payloads), aws.runner(payloads=payloads)


def test_a_job_waiting_for_a_slot_comes_back_later_and_never_reaches_the_dead_letter_queue(
        aws: Aws) -> None:
    from runfox.testing import keyed_job

    holder, waiter = aws.runner(slot_wait=1), aws.runner(slot_wait=1)  # two workers
    holder.dispatch("wf#1", [keyed_job("wf#1", f"g{i}", "gpu", 1) for i in range(2)])
    (first,) = holder.take_pending_jobs(limit=1, lease=30.0)
    # Many more refusals than the queue's maxReceiveCount: the waiting job is
    # re-sent with a delay each time, so its receive count starts again.
    for _ in range(conftest.MAX_RECEIVES + 2):
        assert waiter.take_pending_jobs(lease=30.0) == []
        time.sleep(1.1)
    assert [j.step_id for j in waiter.list_pending_jobs()] == ["g1"]
    holder.ack(first, {"ok": True})
    deadline = time.monotonic() + 10
    got: list[Any] = []
    while not got and time.monotonic() < deadline:
        got = waiter.take_pending_jobs(lease=30.0)
        time.sleep(0.2)
    assert [j.step_id for j in got] == ["g1"]
    assert aws.dead_letters() == []
    waiter.submit_work_result("wf#1", "g1", {"ok": True}, 0)
    held, _ = waiter.slots.holders("gpu")
    assert held == {}
