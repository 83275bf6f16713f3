"""Schedules and idempotency keys on the in-memory and SQL stores (the contract suites),
plus the pure trigger functions and the CLI."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqldb import KINDS, scratch_database, wipe

from runfox.backend import InMemoryStore
from runfox.backend.sql import SqlStore
from runfox.cli import main
from runfox.schedule import ScheduleError, make_trigger, next_fires, parse_duration
from runfox.testing import KeyedStoreContract, ScheduleContract


class TestInMemoryKeys(KeyedStoreContract):
    @pytest.fixture
    def store(self) -> InMemoryStore:
        return InMemoryStore()


class TestInMemorySchedules(ScheduleContract):
    @pytest.fixture
    def store(self) -> InMemoryStore:
        return InMemoryStore()


@pytest.fixture(scope="module", params=KINDS)
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[str]:
    with scratch_database(request.param, tmp_path_factory.mktemp("sql")) as url:
        yield url


@pytest.fixture
def store(database: str) -> Iterator[SqlStore]:
    store = SqlStore(database)
    wipe(store.engine)
    yield store
    store.close()


class TestSqlKeys(KeyedStoreContract):
    @pytest.fixture
    def reopen(self, database: str) -> Iterator[Callable[[], SqlStore]]:
        opened: list[SqlStore] = []

        def make() -> SqlStore:
            opened.append(SqlStore(database))
            return opened[-1]

        yield make
        for one in opened:
            one.close()


class TestSqlSchedules(ScheduleContract):
    pass


# -- the pure part ---------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [(30, 30.0), ("30", 30.0), ("30s", 30.0),
                                                ("5m", 300.0), ("1h", 3600.0), ("1.5h", 5400.0),
                                                ("1d", 86400.0)])
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_aliases_and_fold_hours() -> None:
    trigger = make_trigger(cron="@hourly", now=0.0)
    assert next_fires(trigger, "UTC", 0.0, 2) == [3600.0, 7200.0]
    zone = ZoneInfo("America/New_York")
    # Every 30 minutes through the fall-back night: each wall time once.
    start = datetime(2030, 11, 3, 0, 10, tzinfo=zone).timestamp()
    shown = [datetime.fromtimestamp(t, zone).strftime("%H:%M%z")
             for t in next_fires({"cron": "*/30 * * * *"}, "America/New_York", start, 6)]
    assert shown == ["00:30-0400", "01:00-0400", "01:30-0400", "02:00-0500", "02:30-0500",
                     "03:00-0500"]


def test_an_unknown_zone_names_tz() -> None:
    with pytest.raises(ScheduleError, match=r"^tz: unknown time zone"):
        make_trigger(cron="@daily", tz="Nowhere/City", now=0.0)


# -- the CLI ---------------------------------------------------------------------------------


def test_cli_schedule_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nsteps:\n  - id: a\n    fn: f\n", encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'r.db'}"
    assert main(["schedule", "add", "n", str(spec), "--cron", "0 3 * * *", "--tz",
                 "Europe/Paris", "--backend", url]) == 0
    assert "next fire" in capsys.readouterr().out
    assert main(["schedule", "add", "n", str(spec), "--every", "5m", "--backend", url]) == 2
    assert "name: a schedule called 'n' exists" in capsys.readouterr().err
    assert main(["schedule", "add", "x", str(spec), "--cron", "bad", "--backend", url]) == 2
    assert capsys.readouterr().err.startswith("runfox: error: cron:")
    assert main(["schedule", "next", "n", "-n", "2", "--backend", url]) == 0
    assert capsys.readouterr().out.split() and True
    assert main(["schedule", "pause", "n", "--backend", url]) == 0
    assert main(["schedule", "list", "--backend", url]) == 0
    assert "\tpaused\t" in capsys.readouterr().out
    assert main(["schedule", "remove", "n", "--backend", url]) == 0
    assert main(["schedule", "show", "n", "--backend", url]) == 2
    assert main(["schedule", "next", "--cron", "@daily", "-n", "1"]) == 0


def test_cli_start_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nsteps:\n  - id: a\n    fn: f\n", encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'r.db'}"
    assert main(["start", str(spec), "--key", "order-1", "--backend", url]) == 0
    first = capsys.readouterr().out.strip()
    assert main(["start", str(spec), "--key", "order-1", "--backend", url]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == first and "exists" in err
