"""Run every example as a subprocess and check what it prints.

Each example must appear in ``EXPECTED`` with lines its output has to contain
exactly (whole lines, compared after stripping trailing spaces). A new example
without an entry here makes ``test_every_example_is_covered`` fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

EXPECTED: dict[str, list[str]] = {
    "products/convection.py": [
        "  evolve               <- make_solver, initial_temperature",
        "target evolve: Complete, ran build_mesh, initial_temperature, make_solver, evolve",
        "what_invalidates(initial_temperature): ['initial_temperature', 'evolve']",
        "reopened: ['initial_temperature', 'evolve']; workflow in_progress",
        "rerun: Complete, ran initial_temperature, evolve",
        'outcome: {"log": [0.45, 0.405, 0.3645], "plot": null}',
    ],
    "authoring/pipeline.py": [
        "result: Complete",
        'outcome: {"report": {"attempt": 1, "line": "20 widgets", "step": "report"}, '
        '"total": 20}',
        "ran: add, multiply, report",
        'input of add: {"x": 2, "y": 3}, output: {"result": 5}',
        "rerun: Complete, ran [], from the cache [add, multiply, report], total 20",
        "rerun with k=5: ran [multiply, report], from the cache [add], total 25",
        "with a misspelt input: Failed",
        "  BindingError: step 'add' (__main__.add): unknown input 'why'; the function "
        "takes 'x', 'y'",
    ],
    "ops/single_step.py": [
        "result: Complete",
        'steps: {"measure": "complete"}',
        'outcome: {"letters": 37, "longest": "noticed", "words": 7}',
    ],
    "ops/accumulation.py": [
        '  price_items  added {"parcels": 2, "stage": "priced", "subtotal": 8025} changed {}',
        '  discount     added {"discount": 802} changed {"stage": "discounted"}',
        '  total        added {"total": 9657} changed {"stage": "totalled"}',
        'outcome: {"discount": 802, "last_stage": "totalled", "shipping": 990, '
        '"subtotal": 8025, "tax": 1444, "total": 9657}',
    ],
    "ops/fan_out.py": [
        "round 1: dispatched 1 job(s) together: load",
        "round 2: dispatched 4 job(s) together: resize_160, resize_320, resize_640, resize_1280",
        "  in flight now: 4",
        "result: Complete",
        'outcome: {"photo": "harbour-at-dusk.jpg", '
        '"renditions": ["160x120", "320x240", "640x480", "1280x960"]}',
    ],
    "ops/fan_in.py": [
        "steps in flight at each round: [3, 1]",
        "result: Complete",
        'outcome: {"mean_celsius": 9.23, "readings": 3, "spread_celsius": 5.6, '
        '"wettest": "river_mouth"}',
    ],
    "ops/branch_halt.py": [
        "  result: Halt (workflow status halted)",
        '  steps: {"check_stock": "halted", "reserve": "skipped", "label": "skipped"}',
        '  outcome: {"short_by": 4, "sku": "oak-dowel", "status": "backordered"}',
        "  result: Complete (workflow status complete)",
        '  outcome: {"label": "PARCEL/RSV-BRAS-012", "reservation": "RSV-BRAS-012", '
        '"status": "packed"}',
    ],
    "ops/retry.py": [
        "  attempt 1: refused",
        "  attempt 2: refused (planned wait 0.05 s, waited at least that: True)",
        "  attempt 3: answered (planned wait 0.1 s, waited at least that: True)",
        '  outcome: {"high_water": ["05:42", "18:07"], "port": "Kestrel Bay"}',
        "  attempts recorded on the step: 3",
        "  attempt 4: refused (planned wait 0.2 s, waited at least that: True)",
        "  result: Failed",
        "  failed step: fetch, attempts: 4",
        "  error: ConnectionError: tide service refused call 4",
        "  workflow status: failed",
    ],
    "ops/stack_machine.py": [
        "  run  6: swap  ->  stack [2, 30]",
        "  run  9:    *  ->  stack [784]",
        '  outcome: {"depth": 1, "instructions_run": 10, "value": 784}',
        "  result: Failed",
        "  error: IndexError: stack underflow: '+' at pc 1 needs 2 value(s)",
    ],
    "uses/fibonacci.py": [
        "rounds: 15, steps per round: [2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]",
        "F(15) = 610",
        'outcome: {"last": 610, "sequence": '
        "[0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610]}",
    ],
    "uses/fibonacci_async.py": [
        "result: Complete",
        "F(20) = 6765",
        "jobs run by the worker: 20",
        "'next' went round the loop 19 times",
        "jobs run on the main thread: 0",
        "worker thread still alive: False",
        'outcome: {"last": 6765, "terms": [0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, '
        "233, 377, 610, 987, 1597, 2584, 4181, 6765]}",
    ],
    "uses/document_parser.py": [
        "steps per round: [1, 4, 1]",
        "  4. Visitors",
        "summary: Skerry Light: keeper's handover notes: 4 sections, 141 words, "
        "longest is 'Lamp and lens'; 3 open items; mostly about lamp, boat, horn.",
        "result: Complete",
    ],
    "uses/multisource.py": [
        "unavailable: ['tern_express did not answer within 2 s']",
        "best: swift_couriers",
        'outcome: {"answered": 3, "asked": 4, "best": "swift_couriers", "ranking": '
        '["swift_couriers=70.5", "gannet_post=66.1", "pelican_freight=57.5"], '
        '"unavailable": ["tern_express did not answer within 2 s"]}',
    ],
    "uses/validation.py": [
        "Maren Okafor: ACCEPTED (Complete) after "
        "['receive', 'check_email', 'check_date', 'check_size', 'confirm']",
        '  outcome: {"accepted": true, "price_eur": 72, "reference": "HALL-20260509-MO"}',
        '  outcome: {"accepted": false, "reason": "120 guests is over the hall\'s limit of 80", '
        '"rejected_by": "check_size"}',
        '  outcome: {"accepted": false, "reason": "2026-03-14: the hall is closed for its '
        'annual inspection", "rejected_by": "check_date"}',
        "Pip Harrow: REJECTED (Halt) after ['receive']",
        '  outcome: {"accepted": false, "reason": "missing fields: email,hours,guests", '
        '"rejected_by": "receive"}',
    ],
    "uses/conways_game_of_life.py": [
        "gen 0        gen 1        gen 2        gen 3        gen 4",
        ".#........   ..........   ..........   ..........   ..........",
        "###.......   .##.......   #.#.......   ..##......   ...#......",
        ".......#..   ......###.   .......#..   ......###.   .......#..",
        "populations: [8, 8, 8, 8, 8]",
        'outcome: {"board": ["..........", "..#.......", "...#......", ".###......", '
        '".......#..", ".......#..", ".......#..", ".........."], "generation": 4, '
        '"population": 8}',
    ],
}


def run_example(relative: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, str(Path("examples") / relative)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )


@pytest.mark.parametrize("relative", sorted(EXPECTED))
def test_example_prints_its_result(relative: str) -> None:
    proc = run_example(relative)
    assert proc.returncode == 0, f"{relative} exited {proc.returncode}:\n{proc.stderr}"
    lines = [line.rstrip() for line in proc.stdout.splitlines()]
    missing = [want for want in EXPECTED[relative] if want.rstrip() not in lines]
    assert not missing, f"{relative} did not print {missing!r}; it printed:\n{proc.stdout}"


def test_every_example_is_covered() -> None:
    # greeting/ is the CLI quickstart (a spec plus an executor module), tested in test_cli.py.
    found = {p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.rglob("*.py")
             if p.parent.name in ("ops", "uses", "products", "authoring")}
    assert found, "no examples found"
    assert found == set(EXPECTED), (
        f"examples without a test: {sorted(found - set(EXPECTED))}; "
        f"tests without an example: {sorted(set(EXPECTED) - found)}")


def test_the_subworkflow_example_runs_through_runfox_run(tmp_path: Path) -> None:
    """examples/subworkflow: a parent whose step runs shipping.yaml as a child execution;
    ``runfox status`` shows the child's id on the step, and the child names its parent."""
    import json

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    db = f"sqlite:///{tmp_path / 'runfox.db'}"
    cli = [sys.executable, "-m", "runfox.cli"]
    done = subprocess.run(
        [*cli, "run", "examples/subworkflow/parent.yaml", "--backend", db,
         "--executor", "examples.subworkflow.tasks:execute",
         "--input", 'items=[{"sku": "mug", "price": 850, "grams": 400}, '
                    '{"sku": "pot", "price": 2400, "grams": 1300}]',
         "--input", "address=1 Quay St"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"boxes": 2, "total": 3250,
                                       "receipt": "paid 32.50, tracking TRK-1QUAYS-2"}
    wf_id = next(line.split()[-1] for line in done.stderr.splitlines()
                 if line.startswith("runfox: execution "))

    def status(key: str) -> dict[str, Any]:
        shown = subprocess.run([*cli, "status", key, "--json", "--backend", db], cwd=ROOT,
                               env=env, capture_output=True, text=True, timeout=120,
                               check=True)
        return dict(json.loads(shown.stdout))

    parent = status(wf_id)
    child_id = parent["steps"]["ship"]["child"]
    child = status(child_id)
    assert child["name"] == "shipping" and child["status"] == "complete"
    assert child["parent"] == {"execution": wf_id, "step": "ship", "run_id": 0, "depth": 1}
    assert child["inputs"] == {"address": "1 Quay St", "grams": 1700}
    assert child["outcome"] == {"boxes": 2, "tracking": "TRK-1QUAYS-2"}
    assert parent["steps"]["ship"]["output"] == child["outcome"]
