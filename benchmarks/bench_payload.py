"""Cost per step with 1 KB and 1 MB outputs under distinct keys, on SQLite.

A chain of ``--length`` steps in which step *i* returns ``{"k<i>": <size> bytes}``
(a value of its own: four long strings, or with ``--shape rows`` small objects):
every output lands in the shared state under a key of its own, so the state
grows by ``size`` per step. Run three ways: on the memory backend; on a fresh
SQLite file (WAL, ``synchronous = NORMAL``) by ``wf.run()`` with an in-process
worker (``sqlite-run``: each result travels through the job table, then is
gathered and applied); and by a driving ``Worker`` on such a file
(``sqlite-worker``: what ``runfox worker`` does; a result is applied in the
transaction that acknowledges its job, so it never goes through the job table).

Printed per size: ms per step, output MB written per second, and for SQLite the
cost beyond the bytes themselves: a step's time minus the floor, over the 1 KB
step's time. The floor is what any store must do with an output at least once,
measured in the same run: encode it as JSON (``json.dumps``) and commit that text
with plain ``sqlite3`` in one transaction, averaged over 20 such outputs
written one after another (so including the WAL checkpoints that writing
that many bytes costs). Target (issue 13): within 2x. A store
that rewrites the whole state on each transition pays O(state) per step instead,
so the 1 MB figure grows with ``--length``.

What a 1 MB step stores: one blob, the value under ``k<i>``. The output is over
the offload threshold, so it is packed per key (``runfox.payloads.pack_object``):
its row holds ``{"k<i>": <reference>}``, and the state key ``k<i>`` refers to the
same blob (stored and hashed once). In ``sqlite-run`` the result's row in the job
table holds the references too (schema 11; before, the output was a blob, the
state value another, and the result crossed the job table whole).

    python benchmarks/bench_payload.py [--length 10] [--repeat 5] [--sizes 1000,1000000]
        [--kinds memory,sqlite-run,sqlite-worker] [--shape strings|rows]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from typing import Any

import runfox as rfx
from runfox.backend import Backend, InProcessWorker
from runfox.backend.sql import parts_from_url
from runfox.worker import Worker

CHUNKS = 4  # a 1 MB output is four strings (runfox's string length limit is 1,000,000)
RECORD = 64  # bytes of JSON per row of a "rows" output, about
SHAPES = ("strings", "rows")


def spec(length: int) -> dict[str, Any]:
    steps = [{"id": "s0", "fn": "emit", "input": {"key": "k0"}}]
    steps += [{"id": f"s{i}", "fn": "emit", "depends_on": [f"s{i - 1}"],
               "input": {"key": f"k{i}"}} for i in range(1, length)]
    return {"name": f"payload-{length}", "steps": steps}


def value(size: int, shape: str, step: int) -> list[Any]:
    """About ``size`` bytes of JSON, different for each step (equal values would
    share one blob): ``strings``, four long strings (what costs only its bytes);
    ``rows``, small objects (what costs a walk per item as well)."""
    if shape == "strings":
        return [(f"{step}.{i}:" + "x" * size)[:size // CHUNKS] for i in range(CHUNKS)]
    return [{"id": i, "name": f"user{step}-{i:06d}", "score": i * 0.5, "tags": ["a", "b"]}
            for i in range(max(size // RECORD, 1))]


def emitter(size: int, length: int, shape: str = "strings") -> Any:
    """The executor: step *i* returns ``{"k<i>": value(size, shape, i)}``, made
    beforehand so that the run does not time making them."""
    made = {f"k{i}": value(size, shape, i) for i in range(length)}

    def emit(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
        return {inputs["key"]: made[inputs["key"]]}

    return emit


KINDS = ("memory", "sqlite-run", "sqlite-worker")


def run_once(kind: str, size: int, length: int, shape: str = "strings"
             ) -> tuple[float, float]:
    """Seconds for one chain, from creation to completion: elapsed, and the CPU time
    of this process (every thread; on a shared machine the steadier figure)."""
    with tempfile.TemporaryDirectory(prefix="runfox-payload-") as directory:
        emit = emitter(size, length, shape)
        if kind == "memory":
            backend = Backend(executor=emit)
        else:
            store, runner = parts_from_url(f"sqlite:///{directory}/bench.db")
            backend = Backend(store=store, runner=runner, poll_interval=0.001)
        started, cpu = time.perf_counter(), time.process_time()
        if kind == "sqlite-worker":
            wf_id = backend.create(rfx.load_spec(spec(length)), {})
            backend.apply_and_advance(wf_id)
            worker = Worker(backend, emit, concurrency=1, poll_interval=0.001,
                            sweep_interval=3600, schedule_interval=None, register=False)
            worker.run(max_jobs=length, idle_timeout=10)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            assert backend.load(wf_id).status is rfx.WorkflowStatus.COMPLETE
        else:
            wf = rfx.Workflow.from_dict(spec(length), backend, {})
            harness = {} if kind == "memory" else {"worker": InProcessWorker(runner, emit)}
            result = wf.run(**harness)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            assert isinstance(result, rfx.Complete), result
            wf_id = wf.id
        state = backend.load(wf_id).state
        assert len(state) == length and state[f"k{length - 1}"] == value(size, shape, length - 1)
        if kind != "memory":
            runner.close()
            store.close()
    return elapsed, cpu


def floor(size: int, shape: str = "strings", repeat: int = 20) -> float:
    """Seconds to encode one step's output as JSON and commit it once with plain sqlite3.

    The mean over ``repeat`` outputs committed one after another, as a store
    writing one per step does: in WAL mode every few megabytes a commit also
    checkpoints (copies the log into the database file), and that cost belongs
    to the bytes too (a median of single commits would leave it out)."""
    output = {"k0": value(size, shape, 0)}
    with tempfile.TemporaryDirectory(prefix="runfox-payload-") as directory:
        conn = sqlite3.connect(f"{directory}/raw.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
        started = time.perf_counter()
        for i in range(repeat):
            text = json.dumps(output)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t VALUES (?, ?)", (i, text))
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - started
        conn.close()
    return elapsed / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sizes", default="1000,1000000")
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help=f"which runs, of {', '.join(KINDS)}")
    parser.add_argument("--shape", choices=SHAPES, default="strings",
                        help="what an output holds: four long strings (the issue's measure) "
                             "or small objects")
    parser.add_argument("--quick", action="store_true", help="once each")
    args = parser.parse_args()
    if args.quick:
        args.repeat = 1
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"chain of {args.length} steps, step i returns {{'k<i>': <size> bytes}} (state grows "
          f"by size per step), values of {args.shape}, median of {args.repeat}")
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds: {', '.join(sorted(unknown))}")
    print(f"{'backend':<14} {'output':>9} {'per step':>10} {'CPU':>9} {'MB/s':>8} {'floor':>10} "
          f"{'beyond bytes':>13} {'vs smallest':>12}")
    for kind in kinds:
        base = None
        for size in sizes:
            runs = [run_once(kind, size, args.length, args.shape) for _ in range(args.repeat)]
            elapsed = statistics.median(wall for wall, _ in runs)
            cpu = statistics.median(used for _, used in runs) / args.length
            per = elapsed / args.length
            rate = size * args.length / elapsed / 1e6
            raw = floor(size, args.shape) if kind != "memory" else 0.0
            beyond = per - raw
            base = base or beyond
            print(f"{kind:<14} {size:>9} {per * 1e3:>8.2f}ms {cpu * 1e3:>7.2f}ms {rate:>8.1f} "
                  f"{raw * 1e3:>8.2f}ms {beyond * 1e3:>11.2f}ms {beyond / base:>11.2f}x",
                  flush=True)
    print("(CPU: of this process, per step; floor: json.dumps of one output and a plain "
          "sqlite3 commit of that text, mean of 20; beyond bytes: per-step time minus the "
          "floor; target: 1 MB within 2x of 1 KB)")


if __name__ == "__main__":
    main()
