"""``Backend.transition(..., loaded=record)``: a record read earlier saves a load, safely."""

from __future__ import annotations

from typing import Any

import pytest
from contract import fan_executor, fan_spec
from test_workflow import CountingStore

from runfox.backend import Backend
from runfox.results import Dispatch, Ignored
from runfox.status import StepStatus


def started(backend: Backend) -> tuple[str, Any]:
    wf = backend.create(fan_spec(2), {"n": 2})
    _, nxt = backend.apply_and_advance(wf, dispatch=False)
    assert isinstance(nxt, Dispatch)
    return wf, nxt.jobs[0]


def test_a_fresh_loaded_record_saves_the_load() -> None:
    store = CountingStore()
    backend = Backend(store=store)
    wf, root = started(backend)
    record = backend.load(wf)
    store.loads = 0
    applied, nxt = backend.apply_and_advance(wf, [("root", {"n": 2}, root.run_id)],
                                             dispatch=False, loaded=record)
    assert applied == [None] and isinstance(nxt, Dispatch)
    assert store.loads == 0


def test_a_stale_loaded_record_conflicts_and_is_reloaded() -> None:
    store = CountingStore()
    backend = Backend(store=store)
    wf, root = started(backend)
    stale = backend.load(wf)
    backend.apply_and_advance(wf, [("root", {"n": 2}, root.run_id)], dispatch=False)
    leaf = backend.load(wf).steps["leaf0"]
    output = fan_executor("leaf", {"i": 0, "n": 2})
    applied, _ = backend.apply_and_advance(wf, [("leaf0", output, leaf.run_id)],
                                           dispatch=False, loaded=stale)
    assert applied == [None]  # applied on the fresh record, not ignored on the stale one
    record = backend.load(wf)
    assert record.steps["leaf0"].status is StepStatus.COMPLETE
    assert record.steps["root"].status is StepStatus.COMPLETE


def test_nothing_to_do_on_a_loaded_record_is_confirmed_on_a_fresh_one() -> None:
    """A copy from before the claim would ignore the result; the fresh record applies it."""
    store = CountingStore()
    backend = Backend(store=store)
    wf = backend.create(fan_spec(1), {"n": 1})
    before_claim = backend.load(wf)
    _, nxt = backend.apply_and_advance(wf, dispatch=False)
    (root,) = nxt.jobs  # type: ignore[union-attr]
    store.loads = 0
    applied, _ = backend.apply_and_advance(wf, [("root", {"n": 1}, root.run_id)],
                                           dispatch=False, loaded=before_claim)
    assert applied == [None] and store.loads == 1
    # A genuine duplicate is still ignored after the check.
    applied, _ = backend.apply_and_advance(wf, [("root", {"n": 1}, root.run_id)],
                                           dispatch=False, loaded=backend.load(wf))
    assert isinstance(applied[0], Ignored)


def test_a_record_of_another_execution_is_refused() -> None:
    backend = Backend()
    a, _ = started(backend)
    b, _ = started(backend)
    with pytest.raises(ValueError, match="not"):
        backend.apply_and_advance(a, loaded=backend.load(b))
