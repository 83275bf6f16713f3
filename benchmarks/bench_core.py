"""Orchestration overhead on the memory backend: chain and fan-out/fan-in.

Runs each shape at several sizes with a no-op executor and prints the median
wall time of a whole run (create + drive to completion) and the per-step
overhead. The target is a flat per-step cost: within 2x from 100 to 10,000 steps.

    python benchmarks/bench_core.py [--sizes 10,100,1000,10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import runfox as rfx


def chain(n: int) -> dict:
    steps = [{"id": "s0", "fn": "inc", "input": {"x": {"var": "input.x"}}}]
    for i in range(1, n):
        steps.append({"id": f"s{i}", "fn": "inc", "depends_on": [f"s{i - 1}"],
                      "input": {"x": {"var": f"steps.s{i - 1}.output.x"}}})
    return {"name": f"chain-{n}", "steps": steps,
            "outputs": {"x": {"var": f"steps.s{n - 1}.output.x"}}}


def fan(n: int) -> dict:
    """A root, n - 2 parallel leaves, and a sink that depends on every leaf."""
    leaves = max(1, n - 2)
    steps = [{"id": "root", "fn": "inc", "input": {"x": {"var": "input.x"}}}]
    for i in range(leaves):
        steps.append({"id": f"l{i}", "fn": "inc", "depends_on": ["root"],
                      "input": {"x": {"var": "steps.root.output.x"}}})
    steps.append({"id": "sink", "fn": "inc", "depends_on": [f"l{i}" for i in range(leaves)],
                  "input": {"x": {"var": "steps.l0.output.x"}}})
    return {"name": f"fan-{n}", "steps": steps,
            "outputs": {"x": {"var": "steps.sink.output.x"}}}


def execute(fn: str, inputs: dict) -> dict:
    return {"x": inputs["x"] + 1}


def run_once(spec: dict) -> float:
    backend = rfx.Backend(executor=execute)
    start = time.perf_counter()
    result = rfx.Workflow.from_dict(spec, backend, inputs={"x": 0}).run()
    elapsed = time.perf_counter() - start
    assert isinstance(result, rfx.Complete), result
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000,10000")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{'shape':<8} {'steps':>6} {'median run':>12} {'per step':>10}  (memory backend, "
          f"median of {args.repeat})")
    for name, build in (("chain", chain), ("fan", fan)):
        base = None
        for n in sizes:
            spec = build(n)
            times = [run_once(spec) for _ in range(args.repeat)]
            med = statistics.median(times)
            per = med / n * 1e6
            if n == 100:
                base = per
            ratio = f"  x{per / base:.2f} vs 100" if base and n > 100 else ""
            print(f"{name:<8} {n:>6} {med * 1e3:>10.1f}ms {per:>8.1f}us{ratio}")
    spec = fan(300)
    times = [run_once(spec) for _ in range(max(args.repeat, 5))]
    print(f"300-step fan-out: median {statistics.median(times) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
