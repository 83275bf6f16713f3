"""Cost per step with 1 KB and 1 MB outputs under distinct keys, on SQLite.

A chain of ``--length`` steps in which step *i* returns ``{"k<i>": <size> bytes}``:
every output lands in the shared state under a key of its own, so the state
grows by ``size`` per step. Run by ``wf.run()`` with an in-process worker on a
fresh SQLite file (WAL, ``synchronous = NORMAL``) and on the memory backend.

Printed per size: ms per step, output MB written per second, and for SQLite the
cost beyond the bytes themselves: a step's time minus what plain ``sqlite3`` takes
to commit the same output bytes once (measured in the same run), over the 1 KB
step's time. Target (issue 13): within 2x. A store that rewrites the whole
state on each transition pays O(state) per step instead, so the 1 MB figure
grows with ``--length``.

    python benchmarks/bench_payload.py [--length 10] [--repeat 5] [--sizes 1000,1000000]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from typing import Any

import runfox as rfx
from runfox.backend import Backend, InProcessWorker
from runfox.backend.sql import parts_from_url

CHUNKS = 4  # a 1 MB output is four strings (runfox's string length limit is 1,000,000)


def spec(length: int) -> dict[str, Any]:
    steps = [{"id": "s0", "fn": "emit", "input": {"key": "k0"}}]
    steps += [{"id": f"s{i}", "fn": "emit", "depends_on": [f"s{i - 1}"],
               "input": {"key": f"k{i}"}} for i in range(1, length)]
    return {"name": f"payload-{length}", "steps": steps}


def emitter(size: int) -> Any:
    piece = "x" * (size // CHUNKS)

    def emit(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        return {inputs["key"]: [piece] * CHUNKS}

    return emit


def run_once(kind: str, size: int, length: int) -> float:
    """Seconds for one chain, from creation to completion."""
    with tempfile.TemporaryDirectory(prefix="runfox-payload-") as directory:
        if kind == "sqlite":
            store, runner = parts_from_url(f"sqlite:///{directory}/bench.db")
            backend = Backend(store=store, runner=runner, poll_interval=0.001)
        else:
            backend = Backend(executor=emitter(size))
        started = time.perf_counter()
        wf = rfx.Workflow.from_dict(spec(length), backend, {})
        if kind == "sqlite":
            result = wf.run(worker=InProcessWorker(runner, emitter(size)))
        else:
            result = wf.run()
        elapsed = time.perf_counter() - started
        assert isinstance(result, rfx.Complete), result
        state = backend.load(wf.id).state
        assert len(state) == length and len(state[f"k{length - 1}"][0]) == size // CHUNKS
        if kind == "sqlite":
            runner.close()
            store.close()
    return elapsed


def raw_write(size: int, repeat: int = 5) -> float:
    """Seconds plain sqlite3 takes to commit ``size`` bytes of JSON text once."""
    text = '["' + "x" * size + '"]'
    with tempfile.TemporaryDirectory(prefix="runfox-payload-") as directory:
        conn = sqlite3.connect(f"{directory}/raw.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
        times = []
        for i in range(repeat):
            started = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t VALUES (?, ?)", (i, text))
            conn.execute("COMMIT")
            times.append(time.perf_counter() - started)
        conn.close()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sizes", default="1000,1000000")
    parser.add_argument("--quick", action="store_true", help="once each")
    args = parser.parse_args()
    if args.quick:
        args.repeat = 1
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"chain of {args.length} steps, step i returns {{'k<i>': <size> bytes}} (state grows "
          f"by size per step), in-process worker, median of {args.repeat}")
    print(f"{'backend':<8} {'output':>9} {'per step':>10} {'MB/s':>8} {'raw write':>10} "
          f"{'beyond bytes':>13} {'vs smallest':>12}")
    for kind in ("memory", "sqlite"):
        base = None
        for size in sizes:
            elapsed = statistics.median(run_once(kind, size, args.length)
                                        for _ in range(args.repeat))
            per = elapsed / args.length
            rate = size * args.length / elapsed / 1e6
            raw = raw_write(size) if kind == "sqlite" else 0.0
            beyond = per - raw
            base = base or beyond
            print(f"{kind:<8} {size:>9} {per * 1e3:>8.2f}ms {rate:>8.1f} "
                  f"{raw * 1e3:>8.2f}ms {beyond * 1e3:>11.2f}ms {beyond / base:>11.2f}x",
                  flush=True)
    print("(beyond bytes: per-step time minus the raw sqlite3 commit of that output once; "
          "target: 1 MB within 2x of 1 KB)")


if __name__ == "__main__":
    main()
