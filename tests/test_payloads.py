"""Large payloads by reference: the pure reference format, the payload-store contract
on memory, SQLite, PostgreSQL and MariaDB, offloading stores, and ``runfox status``.

The AWS side (S3, DynamoDB, SQS) is in ``aws_tests/test_aws_payloads.py``; the 5 MB
round trip through every backend is ``BackendContract``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from contract import BackendContract
from sqldb import KINDS, scratch_database, wipe

from runfox import payloads
from runfox.backend import InMemoryPayloads, InMemoryStore, InProcessRunner, Offloader
from runfox.backend.payload_store import offload_threshold
from runfox.backend.sql import SqlStore, parts_from_url
from runfox.errors import PayloadMissing
from runfox.testing import OffloadContract, PayloadContract, large_text

# -- the reference format ------------------------------------------------------------------


def test_a_reference_names_its_blob_by_content_with_size_and_preview() -> None:
    blob = payloads.encode({"text": "é" * 100})
    ref = payloads.make_ref(blob)
    assert ref["$runfox_ref"] == payloads.blob_key(blob) and ref["size"] == len(blob)
    assert ref["preview"] == blob.decode()[:payloads.PREVIEW_CHARS]
    assert payloads.is_ref(ref)
    assert not payloads.is_ref({**ref, "extra": 1})
    assert not payloads.is_ref({**ref, "$runfox_ref": "sha256:nothex"})
    assert payloads.describe(ref).startswith(f"{len(blob)} bytes offloaded")  # type: ignore[union-attr]
    assert payloads.describe({"plain": 1}) is None


def test_pack_offloads_only_what_is_over_the_threshold() -> None:
    stored: dict[str, bytes] = {}
    put = stored.__setitem__
    small, large = {"a": "x" * 10}, {"a": "x" * 200}
    assert payloads.pack(small, 100, put) is small
    ref = payloads.pack(large, 100, put)
    assert payloads.is_ref(ref) and list(stored) == [ref["$runfox_ref"]]
    assert payloads.pack(ref, 100, put) is ref  # a reference stays one
    assert payloads.pack(large, None, put) is large  # offloading off
    for scalar in (None, 1, 2.5, True, "short"):
        assert payloads.pack(scalar, 1, put) == scalar or isinstance(scalar, str)


def test_user_data_that_looks_like_a_reference_is_escaped() -> None:
    stored: dict[str, bytes] = {}
    user = {"$runfox_ref": "my own field", "size": 3}
    packed = payloads.pack(user, None, stored.__setitem__)
    assert payloads.is_ref(packed)
    get = lambda key: __import__("json").loads(stored[key])  # noqa: E731
    assert payloads.unpack(packed, get) == user


def test_the_threshold_setting() -> None:
    assert offload_threshold(None, 7, env={}) == 7
    assert offload_threshold(None, 7, env={"RUNFOX_OFFLOAD_BYTES": "1000"}) == 1000
    assert offload_threshold(None, 7, env={"RUNFOX_OFFLOAD_BYTES": "off"}) is None
    assert offload_threshold("0", 7) is None and offload_threshold(0, 7) is None
    assert offload_threshold("65536", 7) == 65536
    with pytest.raises(ValueError, match="offload='lots'"):
        offload_threshold("lots", 7)
    with pytest.raises(ValueError, match="RUNFOX_OFFLOAD_BYTES"):
        offload_threshold(None, 7, env={"RUNFOX_OFFLOAD_BYTES": "-5"})


def test_an_offloader_fetches_a_blob_once() -> None:
    class Counting(InMemoryPayloads):
        gets = 0

        def _get(self, key: str) -> bytes | None:
            self.gets += 1
            return super()._get(key)

    store = Counting()
    writer, reader = Offloader(store, 100), Offloader(store, 100)
    ref = writer.pack({"rows": large_text(1000)})
    first = reader.unpack(ref)
    assert reader.unpack(ref) is first and store.gets == 1
    assert reader.pack(first)["$runfox_ref"] == ref["$runfox_ref"]  # known: not encoded again
    writer.delete([ref["$runfox_ref"]])
    with pytest.raises(PayloadMissing, match=ref["$runfox_ref"]):
        Offloader(store, 100).unpack(ref)



def test_an_object_is_encoded_from_its_values() -> None:
    for value in ({}, {"a": 1}, {"é": ["x", {"n": None, "f": -0.5, "t": True}], "b": "\u2028\x7f"},
                  {"big": large_text(2000), "n": 10**30, "f": 1e-7, "": [[]], "z": "é" * 2000},
                  {"a": 1, "b": [2], "c": 3, "d": 4, "e": {}}):
        blob, parts = payloads.encode_object(value)
        assert blob == payloads.encode(value)
        apart = [v for v in value.values()
                 if isinstance(v, dict | list) or (isinstance(v, str) and len(v) > 1024)]
        assert parts == [(v, payloads.encode(v)) for v in apart]


def _memory_put() -> tuple[dict[str, bytes], Callable[[str, bytes], None]]:
    stored: dict[str, bytes] = {}
    return stored, stored.__setitem__


def test_an_output_over_the_threshold_is_packed_per_key() -> None:
    stored, put = _memory_put()
    big, mid = large_text(3000, 1), [large_text(900, 2)]
    small = {"big": big, "n": 1}
    assert payloads.pack_object({"n": 1, "s": "x" * 50}, 100, put) == {"n": 1, "s": "x" * 50}
    packed = payloads.pack_object(small, 1000, put)
    assert packed["n"] == 1 and packed["big"] == payloads.make_ref(payloads.encode(big))
    assert list(stored) == [packed["big"]["$runfox_ref"]]  # the value's blob, not the object's
    # Largest first, only until the rest fits: "mid" (about 900 bytes) stays inline.
    stored.clear()
    packed = payloads.pack_object({"mid": mid, "big": big, "n": 1}, 1200, put)
    assert packed["mid"] is mid and payloads.is_ref(packed["big"]) and len(stored) == 1
    # ... and goes too when the threshold is lower.
    packed = payloads.pack_object({"mid": mid, "big": big, "n": 1}, 500, put)
    assert payloads.is_ref(packed["mid"]) and payloads.is_ref(packed["big"])
    assert payloads.unpack_object(packed, lambda k: __import__("json").loads(stored[k])) == {
        "mid": mid, "big": big, "n": 1}
    # An exact-size boundary: the measure is the object's JSON length.
    exact = {"a": [large_text(500, 3)], "b": 2, "c": "é"}
    size = len(payloads.encode(exact))
    assert payloads.pack_object(exact, size, put) is exact
    assert payloads.is_ref(payloads.pack_object(exact, size - 1, put)["a"])


def test_an_output_of_many_small_keys_is_one_reference() -> None:
    stored, put = _memory_put()
    many = {f"k{i}": i for i in range(300)}  # no value worth a reference
    packed = payloads.pack_object(many, 1000, put)
    assert packed == payloads.make_ref(payloads.encode(many)) and len(stored) == 1
    # Values that would not save their reference's size stay, then the whole goes.
    stored.clear()
    lists = {f"k{i}": [i, i] for i in range(200)}
    assert payloads.pack_object(lists, 1000, put) == payloads.make_ref(payloads.encode(lists))
    assert len(stored) == 1  # nothing sent for the values tried on the way


def test_top_level_values_that_look_like_references_are_escaped() -> None:
    stored, put = _memory_put()
    user = {"$runfox_ref": "mine", "x": 1}
    for threshold in (None, 10_000):
        packed = payloads.pack_object({"u": user, "n": 1}, threshold, put)
        assert packed["n"] == 1 and payloads.is_ref(packed["u"])
        assert payloads.unpack_object(packed, lambda k: __import__("json").loads(stored[k])) \
            == {"u": user, "n": 1}
    whole = payloads.pack_object(user, None, put)  # the output itself: whole, as before
    assert payloads.is_ref(whole)
    big = {"big": large_text(3000, 4)}
    assert payloads.pack_object(big, None, put) is big  # offloading off


class _CountingPayloads(InMemoryPayloads):
    """Records every key sent to the store."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    def _put(self, key: str, blob: bytes) -> None:
        self.sent.append(key)
        super()._put(key, blob)


def _count_calls(monkeypatch: pytest.MonkeyPatch, name: str, big_only: int = 200
                 ) -> list[object]:
    """Arguments (of at least ``big_only`` characters) of calls to ``payloads.<name>``."""
    seen: list[object] = []
    original = getattr(payloads, name)

    def counting(value: object, *args: object) -> object:
        result = original(value, *args)
        if len(result if name == "encode" else value) >= big_only:  # type: ignore[arg-type]
            seen.append(value)
        return result

    monkeypatch.setattr(payloads, name, counting)
    return seen


def test_an_output_and_its_state_key_share_one_blob_encoded_hashed_and_sent_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    big = [large_text(600, 1)]
    output = {"k": big, "n": 1}
    ref = payloads.make_ref(payloads.encode(big))
    encoded = _count_calls(monkeypatch, "encode")
    hashed = _count_calls(monkeypatch, "blob_key")
    store = _CountingPayloads()
    offloader = Offloader(store, 300)  # room for a reference (about 200 bytes) and "n"
    with offloader.encoding_once():  # what a store does around one write
        packed_output = offloader.pack_output(output)
        packed_state = offloader.pack(big)
        assert offloader.pack_json(output["n"]) == "1"
    assert packed_output == {"k": ref, "n": 1} and packed_state == ref
    assert [v for v in encoded if v is big or v is output] == [big]
    assert len(hashed) == 1 and store.sent == [ref["$runfox_ref"]]
    # Known (stored by this process): packed again without encoding or hashing.
    assert offloader.pack_output(output) == packed_output and len(hashed) == 1
    # An equal value (another object) is measured and hashed, but not sent again.
    assert offloader.pack([large_text(600, 1)]) == ref and len(store.sent) == 1
    # ... unless it was deleted through the offloader.
    offloader.delete([ref["$runfox_ref"]])
    assert offloader.pack([large_text(600, 1)]) == ref
    assert ref["$runfox_ref"] in store and len(store.sent) == 2


def test_a_result_through_the_sql_queue_shares_the_blob_of_its_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sqlite-run's path: a worker submits a large result (stored once, the row holds
    references), the driver gathers and applies it: the output and the state key
    it lands in refer to that blob, sent and hashed once, one row in the table."""
    import sqlite3

    from runfox import Complete, Workflow
    from runfox.backend import Backend, InProcessWorker

    text = large_text(50_000, 21)
    path = tmp_path / "run.db"
    store, runner = parts_from_url(f"sqlite:///{path}?offload=1000")
    assert runner.payloads is store.payloads()
    hashed = _count_calls(monkeypatch, "blob_key", big_only=10_000)

    def executor(fn: str, inputs: dict[str, object]) -> dict[str, object]:
        return {"text": text, "n": 1} if fn == "big" else {"m": len(str(inputs["t"]))}

    spec = {"name": "share", "steps": [
        {"id": "big", "fn": "big"},
        {"id": "use", "fn": "use", "depends_on": ["big"],
         "input": {"t": {"var": "state.text"}}}]}
    try:
        backend = Backend(store=store, runner=runner, poll_interval=0.001)
        wf = Workflow.from_dict(spec, backend)
        result = wf.run(worker=InProcessWorker(runner, executor), timeout=60)
        assert isinstance(result, Complete), result
    finally:
        runner.close()
        store.close()
    key = payloads.make_ref(payloads.encode(text))["$runfox_ref"]
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT payload_key FROM runfox_payloads").fetchall()
        output = conn.execute("SELECT data FROM runfox_steps WHERE step_id = 'big'"
                              ).fetchone()[0]
        kept = conn.execute("SELECT value FROM runfox_state WHERE name = 'text'").fetchone()[0]
    assert rows == [(key,)]
    assert __import__("json").loads(output)["output"]["text"]["$runfox_ref"] == key
    assert __import__("json").loads(kept)["$runfox_ref"] == key
    assert len(hashed) <= 2  # submitted (1); applied: the driver's copy of the value (1)
    loaded = SqlStore(f"sqlite:///{path}").load(wf.id)  # a fresh process reads it back
    assert loaded.steps["big"].output == {"text": text, "n": 1} and loaded.defects == ()
    assert loaded.state["text"] == text


def test_records_and_results_of_the_old_shape_still_load(tmp_path: Path) -> None:
    """Before schema 11 a large output was one reference, in records and in result
    rows; written here by the old function, into a real SQLite file."""
    import json

    from sqldb import write_old_output_record

    url = f"sqlite:///{tmp_path / 'old.db'}"
    big = large_text(5000, 8)
    output = {"n": 1, "blob": big}
    v1 = write_old_output_record(tmp_path / "old.db", output)
    whole = payloads.make_ref(payloads.encode(output))
    import sqlite3

    with sqlite3.connect(tmp_path / "old.db") as conn:
        stored = conn.execute("SELECT data FROM runfox_steps WHERE step_id = 'root'"
                              ).fetchone()[0]
    assert json.loads(stored)["output"] == whole  # the old shape is what is on disk

    fresh = SqlStore(url, offload=1000)
    loaded = fresh.load(v1.workflow_execution_id)
    assert loaded.steps["root"].output == output and loaded.state["blob"] == big
    assert loaded.defects == ()
    assert fresh.payloads().delete([whole["$runfox_ref"]]) == 1  # type: ignore[union-attr]
    fresh.close()
    again = SqlStore(url, offload=1000)
    (defect,) = again.load(v1.workflow_execution_id).steps["root"].defects
    assert defect.where == "steps.root.output" and defect.stored == whole
    again.close()

    # A result row holding a whole reference (what an older worker submitted).
    store, runner = parts_from_url(url + "?offload=1000")
    try:
        result = {"rows": [large_text(3000, 9)], "ok": True}
        ref = runner.payloads.pack(result)
        assert payloads.is_ref(ref)
        assert runner.submit_work_result("wf-old", "s", ref, 1)  # packed as it is: whole
        ((step_id, gathered),) = runner.gather("wf-old")
        assert step_id == "s" and gathered == result
        # A result whose blob is gone: the attempt fails, naming the key.
        lost = {"rows": [large_text(3000, 10)], "n": 2}
        assert runner.submit_work_result("wf-old", "t", lost, 1)
        key = payloads.make_ref(payloads.encode(lost["rows"]))["$runfox_ref"]
        assert runner.payloads.delete([key]) == 1
        ((_, failed),) = runner.gather("wf-old")
        assert failed["ok"] is False and failed["error_type"] == "PayloadMissing"
        assert key in failed["error"]
    finally:
        runner.close()
        store.close()


def test_a_blob_put_in_a_unit_that_rolled_back_is_sent_again(tmp_path: Path) -> None:
    store, runner = parts_from_url(f"sqlite:///{tmp_path / 'u.db'}?offload=100")
    offloader, unit = store.payloads(), store.unit_with(runner)
    assert offloader is not None and unit is not None
    value = {"rows": large_text(1000, 2)}
    refs: list[dict[str, object]] = []

    def work() -> None:
        refs.append(offloader.pack(value))
        raise RuntimeError("the record's write lost")

    with pytest.raises(RuntimeError):
        unit(work)
    key = refs[0]["$runfox_ref"]
    assert key not in offloader.store  # rolled back with the unit
    assert offloader.pack(value) == refs[0] and key in offloader.store
    assert Offloader(offloader.store, 100).unpack(refs[0]) == value
    runner.close()
    store.close()


# -- memory ------------------------------------------------------------------------------


class TestInMemoryPayloads(PayloadContract):
    @pytest.fixture
    def payloads(self) -> InMemoryPayloads:
        return InMemoryPayloads()


class TestInMemoryOffloading(OffloadContract):
    @pytest.fixture
    def store(self) -> InMemoryStore:
        return InMemoryStore(offload=1024)

    @pytest.fixture
    def reopen(self, store: InMemoryStore) -> Callable[[], InMemoryStore]:
        return lambda: store


class TestInMemoryBackendOffloading(BackendContract):
    @pytest.fixture
    def parts(self) -> tuple[InMemoryStore, InProcessRunner]:
        return InMemoryStore(offload=64 * 1024), InProcessRunner()


# -- SQL ---------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=KINDS)
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[str]:
    with scratch_database(request.param, tmp_path_factory.mktemp("payloads")) as url:
        yield url


class TestSqlPayloads(PayloadContract):
    @pytest.fixture
    def payloads(self, database: str) -> Iterator[object]:
        store = SqlStore(database)
        wipe(store.engine)
        offloader = store.payloads()
        assert offloader is not None
        yield offloader.store
        store.close()


class TestSqlOffloading(OffloadContract):
    @pytest.fixture
    def store(self, database: str) -> Iterator[SqlStore]:
        store = SqlStore(database, offload=1024)
        wipe(store.engine)
        yield store
        store.close()

    @pytest.fixture
    def reopen(self, database: str) -> Iterator[Callable[[], SqlStore]]:
        opened: list[SqlStore] = []

        def make() -> SqlStore:
            opened.append(SqlStore(database, offload=1024))
            return opened[-1]

        yield make
        for store in opened:
            store.close()


def test_the_url_carries_the_offload_setting(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    store, runner = parts_from_url(url + "?offload=off")
    try:
        assert store.payloads() is not None and store.payloads().threshold is None  # type: ignore[union-attr]
    finally:
        runner.close()
        store.close()
    store, runner = parts_from_url(url + "?offload=2048")
    try:
        assert store.payloads().threshold == 2048  # type: ignore[union-attr]
    finally:
        runner.close()
        store.close()
    with pytest.raises(ValueError, match="offload"):
        parts_from_url(url + "?offload=big")


# -- runfox status -------------------------------------------------------------------------


def test_runfox_status_shows_size_and_preview_of_an_offloaded_output(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from runfox import Workflow
    from runfox.backend import Backend
    from runfox.cli import main

    url = f"sqlite:///{tmp_path / 'status.db'}?offload=1000"
    text = large_text(300_000, 11)

    def executor(fn: str, inputs: dict[str, object]) -> dict[str, object]:
        return {"text": text, "small": 1} if fn == "big" else {"n": len(str(inputs["t"]))}

    spec = {"name": "status", "steps": [
        {"id": "big", "fn": "big"},
        {"id": "use", "fn": "use", "depends_on": ["big"],
         "input": {"t": {"var": "steps.big.output.text"}}}],
        "outputs": {"n": {"var": "steps.use.output.n"}}}
    store, runner = parts_from_url(url)
    try:
        wf = Workflow.from_dict(spec, Backend(store=store, runner=runner, executor=executor,
                                              poll_interval=0.01))
        assert wf.run(timeout=60).outcome == {"n": len(text)}  # type: ignore[union-attr]
    finally:
        runner.close()
        store.close()
    ref = payloads.make_ref(payloads.encode(text))  # the output's key "text", a blob
    code = main(["status", wf.id, "--backend", url])
    out = capsys.readouterr().out
    assert code == 0
    assert text not in out and len(out) < 3000  # a preview, not the value
    assert not any(x.startswith("  steps.big.output:") for x in out.splitlines())
    line = next(x for x in out.splitlines() if x.startswith("  steps.big.output.text:"))
    assert f"{ref['size'] / 1e3:.1f} KB offloaded ({ref['$runfox_ref'][:19]}..." in line
    assert '"' + text[:40] in line
    assert "steps.use.inputs.t" in out and 'outcome: {"n": 300000}' in out

    assert main(["status", wf.id, "--backend", url, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    shown = data["steps"]["big"]["output"]
    assert shown == {"text": ref, "small": 1}
    assert shown["text"]["preview"].startswith('"' + text[:20])
    assert data["steps"]["use"]["output"] == {"n": len(text)}

    assert main(["status", wf.id, "--backend", url, "--step", "big"]) == 0
    out = capsys.readouterr().out
    assert "output:   " in out and '"small": 1' in out and "KB offloaded" in out
    assert text not in out


def test_a_missing_blob_of_a_step_input_is_a_defect_naming_its_key() -> None:
    from runfox.graph import advance
    from runfox.testing import new_record

    store = InMemoryStore(offload=1000)
    big = large_text(3000, 12)
    spec = {"steps": [{"id": "a", "fn": "f", "input": {"t": {"var": "input.t"}, "n": 1}}]}
    record = new_record(spec, {"t": big})
    store.write(record)
    claimed = advance(record, 10.0)[0].evolve(version=2)
    assert claimed.steps["a"].inputs == {"t": big, "n": 1}
    store.write(claimed, previous=record)
    offloader = store.payloads()
    assert offloader is not None
    ref = payloads.make_ref(payloads.encode(big))  # the step's inputs go per key
    assert offloader.delete([ref["$runfox_ref"]]) == 1
    loaded = store.load(record.workflow_execution_id)
    (defect,) = loaded.steps["a"].defects
    assert defect.where == "steps.a.inputs.t" and defect.stored == ref
    assert loaded.steps["a"].inputs == {"t": ref, "n": 1}
    assert loaded.inputs == {"t": big}  # the workflow's inputs: a whole blob of their own


def test_missing_header_payloads_are_defects_too() -> None:
    from runfox.testing import new_record

    store = InMemoryStore(offload=100)
    record = new_record({"steps": [{"id": "a", "fn": "f"}]}, {"doc": "d" * 500})
    record = record.evolve(state={"big": "s" * 500, "small": 1}, outcome={"o": "o" * 500})
    store.write(record)
    offloader = store.payloads()
    assert offloader is not None
    keys = [payloads.make_ref(payloads.encode(v))["$runfox_ref"]
            for v in (record.inputs, record.state["big"], record.outcome)]
    assert offloader.delete(keys) == 3
    loaded = store.load(record.workflow_execution_id)
    assert sorted(d.where for d in loaded.defects) == ["inputs", "outcome", "state.big"]
    assert all(any(k in d.message for k in keys) for d in loaded.defects)
    assert loaded.state["small"] == 1 and payloads.is_ref(loaded.state["big"])


# -- gathered outputs are runfox's own: checked in place, not copied deeply ----------------


def _deep(levels: int) -> dict[str, object]:
    value: dict[str, object] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def test_a_gathered_output_is_checked_in_place_and_keeps_its_values() -> None:
    import json

    from runfox.graph import advance, on_step_result
    from runfox.jsonvalue import Decoded, as_output, decoded, json_clone, json_copy
    from runfox.testing import chain_spec, new_record

    rows = [{"id": 1, "tags": ["a"]}, {"id": 2, "score": 0.5}]
    mine = {"rows": rows, "n": 1}
    gathered = decoded(json.loads(json.dumps(mine)))
    assert type(gathered) is Decoded and gathered == mine
    shallow = as_output(gathered)
    assert type(shallow) is dict and shallow == mine and shallow["rows"] is gathered["rows"]
    assert as_output(mine)["rows"] is not rows  # an executor's own output: a deep copy
    for copy in (json_copy(gathered), json_clone(gathered)):
        assert type(copy) is dict and copy == mine and copy["rows"] is not gathered["rows"]

    # The graph keeps a gathered output's values (the payload offloader knows them
    # by identity) and copies an output handed to it by anyone else.
    record = advance(new_record(chain_spec(1)), 1.0)[0]
    applied, _ = on_step_result(record, "s0", gathered, None, 2.0)
    assert applied.steps["s0"].output["rows"] is gathered["rows"]
    assert applied.state["rows"] is gathered["rows"]
    applied, _ = on_step_result(record, "s0", mine, None, 2.0)
    assert applied.steps["s0"].output["rows"] is not rows

    # What a decoder lets through and the graph refuses fails exactly as before.
    for bad in ({"x": [1, float("nan")]}, {"x": _deep(150)}, {"x": [{"y": float("inf")}]}):
        assert as_output(Decoded(bad)) == as_output(dict(bad))
        assert as_output(Decoded(bad))["error_type"] == "InvalidOutput"
    # Not a decoder's type after all (a tuple): the full copy decides, as before.
    assert as_output(Decoded({"x": [1, (2,)]})) == {"x": [1, [2]]}
    assert "$.x.a.a" in as_output(Decoded({"x": _deep(150)}))["error"]


def test_a_too_deep_gathered_output_fails_its_attempt_as_before(tmp_path: Path) -> None:
    """A result row is JSON text of any depth (the runner does not check it); applied
    through the job table on a real SQLite file, the attempt fails with the error
    the graph gave when it copied every output."""
    import json

    from runfox import Failed, WorkflowStatus, limits
    from runfox.backend import Backend
    from runfox.jsonvalue import Decoded, as_output
    from runfox.testing import chain_spec

    store, runner = parts_from_url(f"sqlite:///{tmp_path / 'deep.db'}?offload=1000")
    try:
        backend = Backend(store=store, runner=runner)
        wf_id = backend.create(chain_spec(1), {})
        backend.apply_and_advance(wf_id)
        (job,) = runner.take_pending_jobs(lease=60)
        deep = {"rows": [large_text(2000, 4)], "x": _deep(150)}
        assert runner.submit_work_result(wf_id, job.step_id, deep, job.run_id)
        ((step_id, gathered),) = runner.gather(wf_id)
        assert type(gathered) is Decoded and gathered["x"] == deep["x"]
        _, nxt = backend.apply_and_advance(wf_id, [(step_id, gathered, job.run_id)])
        assert isinstance(nxt, Failed)
        record = backend.load(wf_id)
        step = record.steps["s0"]
        before = as_output(json.loads(json.dumps(deep)))  # what the full copy says
        assert step.status.value == "failed" and record.status is WorkflowStatus.FAILED
        assert step.error is not None and step.error["type"] == "InvalidOutput"
        assert step.error["message"] == before["error"]
        assert "nested more than 100 levels deep" in step.error["message"]

        # The limit is the one configured, as for any output.
        old = limits.configure(depth=200)
        try:
            assert as_output(Decoded(deep)) == deep
        finally:
            limits.restore(old)
    finally:
        runner.close()
        store.close()


def test_on_the_sql_queue_a_large_list_is_encoded_and_hashed_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sqlite-run's path for a value the graph used to copy (a list): the worker
    submits it (encoded, hashed, stored), the driver gathers and applies it, and
    the record's write finds it known: no second encode, no second hash."""
    from runfox import Complete, Workflow
    from runfox.backend import Backend, InProcessWorker

    rows = [{"id": i, "name": f"user-{i:05d}"} for i in range(2000)]
    store, runner = parts_from_url(f"sqlite:///{tmp_path / 'once.db'}?offload=1000")
    encoded = _count_calls(monkeypatch, "encode", big_only=10_000)
    hashed = _count_calls(monkeypatch, "blob_key", big_only=10_000)

    def executor(fn: str, inputs: dict[str, object]) -> dict[str, object]:
        return {"rows": rows, "n": 1}

    try:
        backend = Backend(store=store, runner=runner, poll_interval=0.001)
        wf = Workflow.from_dict({"name": "once", "steps": [{"id": "a", "fn": "a"}]}, backend)
        result = wf.run(worker=InProcessWorker(runner, executor), timeout=60)
        assert isinstance(result, Complete), result
        record = backend.load(wf.id)
    finally:
        runner.close()
        store.close()
    assert record.steps["a"].output == {"rows": rows, "n": 1} and record.state["rows"] == rows
    assert len([v for v in encoded if v == rows]) == 1
    assert len(hashed) == 1
