"""Records: lossless JSON round trip, structure sharing, identifiers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from contract import new_record
from hypothesis import given, settings
from hypothesis import strategies as st
from test_graph import add, dags

from runfox import graph
from runfox.errors import CorruptRecord
from runfox.ids import new_execution_id, split_workflow_execution_id
from runfox.records import StepMap, StepRecord, WorkflowRecord
from runfox.results import Dispatch, DispatchJob, WorkResult
from runfox.status import StepStatus

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.floats(allow_nan=False,
                                                                    allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=12,
)


def round_trip(record: WorkflowRecord) -> WorkflowRecord:
    return WorkflowRecord.from_dict(json.loads(json.dumps(record.to_dict())))


@settings(max_examples=80, deadline=None)
@given(spec=dags(), inputs=st.dictionaries(st.text(max_size=5), json_values, max_size=4),
       stop=st.integers(0, 30), extra=json_values)
def test_json_round_trip_is_lossless_at_every_point(spec: dict[str, Any], inputs: dict[str, Any],
                                                    stop: int, extra: Any) -> None:
    record = new_record(spec, inputs)
    now = 1000.5
    for _ in range(stop):
        record, result = graph.advance(record, now)
        if not isinstance(result, Dispatch):
            break
        job = result.jobs[0]
        output = {**add(job.fn, job.inputs), "extra": extra}
        record, _ = graph.on_step_result(record, job.step_id, output, job.run_id, now + 0.25)
        now += 1.125
    copy = round_trip(record)
    assert copy == record
    assert copy.to_dict() == record.to_dict()
    assert copy.ready == record.ready and copy.open == record.open
    assert [s.unmet for s in copy.steps.values()] == [s.unmet for s in record.steps.values()]


def test_corrupt_data_names_the_record() -> None:
    good = new_record({"steps": [{"id": "a", "fn": "f"}]}).to_dict()
    with pytest.raises(CorruptRecord, match=good["workflow_id"]):
        WorkflowRecord.from_dict({**good, "steps": [{"status": "ready"}]})  # no id
    with pytest.raises(CorruptRecord, match="newer than this runfox"):
        WorkflowRecord.from_dict({**good, "schema": 99})
    with pytest.raises(CorruptRecord):
        WorkflowRecord.from_dict({"workflow_id": "x", "execution_id": "y"})


def test_values_of_the_wrong_shape_load_as_defects_that_keep_the_stored_value() -> None:
    good = new_record({"steps": [{"id": "a", "fn": "f"}, {"id": "b", "fn": "f"}]}).to_dict()
    record = WorkflowRecord.from_dict({
        **good, "state": 5, "inputs": ["x"],
        "steps": [{"id": "a", "status": "exploded", "output": [1, 2]},
                  {"id": "b", "status": "complete", "run_id": "3", "finished_at": True}]})
    assert record.state == {} and record.inputs == {}
    assert record.steps["a"].status is StepStatus.READY and record.steps["a"].output is None
    found = {d.where: (d.stored, d.step) for d in record.defects}
    assert found == {"inputs": (["x"], None), "state": (5, None),
                     "steps.a.status": ("exploded", "a"), "steps.a.output": ([1, 2], "a"),
                     "steps.b.run_id": ("3", "b"), "steps.b.finished_at": (True, "b")}
    assert record.steps["b"].status is StepStatus.COMPLETE and record.steps["b"].run_id == 0
    assert all("must be" in d.message or "not a step status" in d.message
               for d in record.defects)
    # A sound record has none; a null state or inputs is an empty object, not a defect.
    assert WorkflowRecord.from_dict({**good, "state": None, "inputs": None}).defects == ()
    assert WorkflowRecord.from_dict(good).defects == ()


def test_step_map_shares_untouched_chunks() -> None:
    steps = StepMap.build(StepRecord(f"s{i}") for i in range(300))
    changed = steps.replace({"s5": StepRecord("s5", StepStatus.COMPLETE),
                             "s299": StepRecord("s299", StepStatus.COMPLETE)})
    assert steps["s5"].status is StepStatus.READY  # the original is untouched
    assert changed["s5"].status is StepStatus.COMPLETE and len(changed) == 300
    shared = sum(a is b for a, b in zip(steps._chunks, changed._chunks, strict=True))
    assert shared == len(steps._chunks) - 2
    assert changed.changed_since(steps) == ["s5", "s299"]
    assert list(changed)[:3] == ["s0", "s1", "s2"] and "s7" in changed and "zz" not in changed


def test_records_are_frozen() -> None:
    record = new_record({"steps": [{"id": "a", "fn": "f"}]})
    with pytest.raises(AttributeError):
        record.version = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):
        record.steps["a"].status = StepStatus.COMPLETE  # type: ignore[misc]


def test_seed_time_fields() -> None:
    step = StepRecord("a", started_at=0.0, finished_at=1.5)
    assert step.start_time == "1970-01-01T00:00:00+00:00"
    assert step.end_time == "1970-01-01T00:00:01.500000+00:00"


def test_execution_ids_are_unique_and_sortable() -> None:
    ids = {new_execution_id(1_700_000_000.0) for _ in range(100_000)}
    assert len(ids) == 100_000
    assert new_execution_id(1.0) < new_execution_id(2.0)
    assert split_workflow_execution_id("abc#20260101T000000.000000Z-00") == (
        "abc", "20260101T000000.000000Z-00")
    with pytest.raises(ValueError):
        split_workflow_execution_id("no-hash")


def test_jobs_and_results_travel_as_json() -> None:
    job = DispatchJob("w#e", "s", "fn", {"x": [1, {"y": None}]}, 3, 2, 1.5)
    assert DispatchJob.from_dict(json.loads(json.dumps(job.to_dict()))) == job
    assert job.key == "w#e#s#3"
    for bad, message in [([], "JSON object"), ({"step_id": "s", "fn": "f"}, "missing"),
                         ({**job.to_dict(), "run_id": -1}, "run_id"),
                         ({**job.to_dict(), "inputs": "x"}, "inputs")]:
        with pytest.raises(ValueError, match=message):
            DispatchJob.from_dict(bad)
    result = WorkResult("s", {"v": 1}, 4)
    step_id, output = result
    assert (step_id, output, result.run_id) == ("s", {"v": 1}, 4)
