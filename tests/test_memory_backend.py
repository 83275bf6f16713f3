"""The contract suites on the in-memory store and in-process runner."""

from __future__ import annotations

import pytest
from contract import BackendContract, CacheContract, RunnerContract, StoreContract

from runfox.backend import InMemoryStore, InProcessRunner
from runfox.testing import WorkerRegistryContract


class TestInMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> InMemoryStore:
        return InMemoryStore()


class TestInMemoryCache(CacheContract):
    @pytest.fixture
    def store(self) -> InMemoryStore:
        return InMemoryStore()


class TestInProcessRunner(RunnerContract):
    @pytest.fixture
    def runner(self) -> InProcessRunner:
        return InProcessRunner()


class TestInMemoryBackend(BackendContract):
    @pytest.fixture
    def parts(self) -> tuple[InMemoryStore, InProcessRunner]:
        return InMemoryStore(), InProcessRunner()


class TestInMemoryWorkers(WorkerRegistryContract):
    @pytest.fixture
    def store(self) -> InMemoryStore:
        return InMemoryStore()
