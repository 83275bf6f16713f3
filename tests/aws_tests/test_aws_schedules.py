"""Idempotency keys and schedules on DynamoDB (the contract suites), and the
``schedule_tick`` Lambda entry point."""

from __future__ import annotations

from typing import Any

import pytest

from runfox.errors import BackendError
from runfox.testing import KeyedStoreContract, ScheduleContract

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
