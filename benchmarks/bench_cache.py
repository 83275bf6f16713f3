"""The step cache: what a hit costs, and a rerun served entirely from the cache.

1. **A hit against a normal transition** (memory and SQLite, one process, medians):
   a chain of N steps is driven by hand, one ``apply_and_advance`` per step (apply
   the result, claim the next step: a normal transition), and the per-step time
   is compared with the per-step time of a rerun of the same chain in which every
   step is a cache hit (lookup, completion and claim of the next step, all in the
   one transition that claims the first step). Ratio = hit / transition; the goal
   is <= 1.
2. **A 1,000-step rerun from the cache against a no-op run** (SQLite file): the
   same spec, a no-op executor; the rerun must take at most 2x the no-op run.

    python benchmarks/bench_cache.py [--steps 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import runfox as rfx
from runfox.backend.sql import SqlStore


def chain(n: int, cached: bool) -> dict:
    steps = [{"id": "s0", "fn": "inc", "input": {"x": {"var": "input.x"}}}]
    for i in range(1, n):
        steps.append({"id": f"s{i}", "fn": "inc",
                      "input": {"x": {"var": f"steps.s{i - 1}.output.x"}}})
    spec: dict = {"name": f"chain-{n}", "steps": steps,
                  "outputs": {"x": {"var": f"steps.s{n - 1}.output.x"}}}
    if cached:
        spec["defaults"] = {"cache": True}
    return spec


def fan(n: int, cached: bool) -> dict:
    steps = [{"id": "root", "fn": "inc", "input": {"x": {"var": "input.x"}}}]
    steps += [{"id": f"l{i}", "fn": "inc", "input": {"x": {"var": "steps.root.output.x"},
                                                      "i": i}} for i in range(n - 2)]
    steps.append({"id": "sink", "fn": "inc", "depends_on": [f"l{i}" for i in range(n - 2)],
                  "input": {"x": {"var": "steps.l0.output.x"}}})
    spec: dict = {"name": f"fan-{n}", "steps": steps,
                  "outputs": {"x": {"var": "steps.sink.output.x"}}}
    if cached:
        spec["defaults"] = {"cache": True}
    return spec


def execute(fn: str, inputs: dict) -> dict:
    return {"x": inputs["x"] + 1}


def by_hand(backend: rfx.Backend, spec: dict, x: int) -> float:
    """Seconds per step of driving ``spec`` one ``apply_and_advance`` per result."""
    wf = rfx.Workflow.from_dict(spec, backend, inputs={"x": x})
    _, nxt = backend.apply_and_advance(wf.id, dispatch=False)
    n = len(spec["steps"])
    start = time.perf_counter()
    while isinstance(nxt, rfx.Dispatch):
        results = [(j.step_id, execute(j.fn, j.inputs), j.run_id) for j in nxt.jobs]
        _, nxt = backend.apply_and_advance(wf.id, results, dispatch=False)
    elapsed = time.perf_counter() - start
    assert isinstance(nxt, rfx.Complete), nxt
    return elapsed / n


def hits(backend: rfx.Backend, spec: dict, x: int) -> float:
    """Seconds per step of a rerun served from the cache (filled by a first run)."""
    wf = rfx.Workflow.from_dict(spec, backend, inputs={"x": x})
    by_hand(backend, spec, x)  # fills the cache
    new = backend.rerun(wf.id)
    start = time.perf_counter()
    _, nxt = backend.apply_and_advance(new, dispatch=False)
    elapsed = time.perf_counter() - start
    assert isinstance(nxt, rfx.Complete), nxt
    assert len(rfx.Workflow(new, backend).steps_cached) == len(spec["steps"])
    return elapsed / len(spec["steps"])


def median(fn: Callable[[int], float], repeat: int) -> float:
    return statistics.median(fn(i) for i in range(repeat))


def hit_ratio(name: str, make: Callable[[], rfx.Backend], n: int, repeat: int) -> None:
    normal = median(lambda i: by_hand(make(), chain(n, False), 1000 + i), repeat)
    hit = median(lambda i: hits(make(), chain(n, True), 2000 + i), repeat)
    print(f"{name:<7} chain of {n}: transition {normal * 1e6:8.1f} us/step, cache hit "
          f"{hit * 1e6:8.1f} us/step, ratio {hit / normal:.2f}")


def rerun_vs_noop(n: int, repeat: int, shape: Callable[[int, bool], dict]) -> None:
    noop: list[float] = []
    rerun: list[float] = []
    for i in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            store = SqlStore(f"sqlite:///{Path(tmp) / 'bench.db'}")
            try:
                backend = rfx.Backend(store=store, executor=execute, poll_interval=0.001)
                start = time.perf_counter()
                plain = rfx.Workflow.from_dict(shape(n, False), backend, inputs={"x": i})
                assert isinstance(plain.run(), rfx.Complete)
                noop.append(time.perf_counter() - start)
                first = rfx.Workflow.from_dict(shape(n, True), backend, inputs={"x": i})
                assert isinstance(first.run(), rfx.Complete)
                start = time.perf_counter()
                again = first.rerun()
                rerun.append(time.perf_counter() - start)
                assert len(again.cached) == n and again.ran == []
            finally:
                store.close()
    a, b = statistics.median(noop), statistics.median(rerun)
    print(f"sqlite  {shape.__name__} of {n}: no-op run {a:6.3f} s, rerun from the cache "
          f"{b:6.3f} s, ratio {b / a:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    def sqlite() -> rfx.Backend:
        tmp = tempfile.mkdtemp()
        return rfx.Backend(store=SqlStore(f"sqlite:///{Path(tmp) / 'b.db'}"))

    hit_ratio("memory", rfx.Backend, 200, args.repeat)
    hit_ratio("sqlite", sqlite, 200, args.repeat)
    rerun_vs_noop(args.steps, args.repeat, chain)
    rerun_vs_noop(args.steps, args.repeat, fan)


if __name__ == "__main__":
    main()
