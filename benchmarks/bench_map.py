"""Per-item overhead of a map step on SQLite, at 100, 1,000 and 10,000 items.

The workflow is ``ls`` (lists N numbers) -> ``each`` (a map over them, a no-op
executor) -> ``sum`` (reads the list). It runs with ``wf.run()`` and the in-process
worker on a fresh SQLite file. Two shapes of the map:

- ``unbounded``: no ``max_parallel``; every item is claimed by one advance and the
  results come back as one batch, so this is mostly the cost of building, writing
  and gathering the items.
- ``max_parallel=50``: 50 items in progress at a time, so N/50 rounds of "apply
  50 results, claim 50 items", each one conditional write. If a result or a claim
  cost grew with the size of the map (a rewrite of the item list, a scan of the
  items), the per-item cost here would grow with N.

Per-item cost = wall time of the whole run / N (medians of ``--repeat`` runs). The
last line per shape is the ratio of the largest to the smallest per-item cost
(the target is flat: within 2x).

    python benchmarks/bench_map.py [--sizes 100,1000,10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import runfox as rfx
from runfox.backend import SqliteStore


def noop(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    if fn == "ls":
        return {"xs": list(range(inputs["n"]))}
    if fn == "one":
        return {"y": inputs["x"] + 1}
    if fn == "sum":
        return {"total": sum(o["y"] for o in inputs["ys"])}
    raise ValueError(fn)


def spec(max_parallel: int | None) -> dict[str, Any]:
    each: dict[str, Any] = {"id": "each", "fn": "one", "map": {"var": "steps.ls.output.xs"},
                            "input": {"x": {"var": "item"}}}
    if max_parallel is not None:
        each["max_parallel"] = max_parallel
    return {"name": "bench-map", "steps": [
        {"id": "ls", "fn": "ls", "input": {"n": {"var": "input.n"}}},
        each,
        {"id": "sum", "fn": "sum", "input": {"ys": {"var": "steps.each.output"}}},
    ], "outputs": {"total": {"var": "steps.sum.output.total"}}}


def run_once(n: int, max_parallel: int | None) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(f"sqlite:///{Path(tmp) / 'bench.db'}")
        try:
            backend = rfx.Backend(executor=noop, store=store)
            wf = rfx.Workflow.from_dict(spec(max_parallel), backend, inputs={"n": n})
            t0 = time.perf_counter()
            result = wf.run(timeout=3600)
            elapsed = time.perf_counter() - t0
        finally:
            store.close()
    want = n * (n + 1) // 2
    if not isinstance(result, rfx.Complete) or result.outcome != {"total": want}:
        raise SystemExit(f"wrong result for n={n}: {result}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    for label, limit in (("unbounded", None), ("max_parallel=50", 50)):
        print(f"map on SQLite, {label}: median of {args.repeat} run(s)")
        per_item = []
        for n in sizes:
            times = [run_once(n, limit) for _ in range(args.repeat)]
            median = statistics.median(times)
            per_item.append(median / n)
            print(f"  {n:>6} items: {median:8.3f} s  {median / n * 1e6:8.1f} us/item")
        print(f"  per-item cost max/min: {max(per_item) / min(per_item):.2f}x")


if __name__ == "__main__":
    main()
