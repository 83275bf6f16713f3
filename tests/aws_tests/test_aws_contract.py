"""The Store, Runner and Backend contract suites on DynamoDB and SQS (moto server)."""

from __future__ import annotations

from typing import Any

import pytest
from contract import BackendContract, RunnerContract, StoreContract

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


class TestSQSRunner(RunnerContract):
    supports_leases = True
    supports_concurrency_limits = False  # not yet: jobs run without the limit (NOTES.md)

    @pytest.fixture
    def runner(self, aws: Aws) -> Any:
        return aws.runner()


class TestAwsBackend(BackendContract):
    @pytest.fixture
    def parts(self, aws: Aws) -> tuple[Any, Any]:
        return aws.store(), aws.runner()
