"""A stack machine: a loop that runs one instruction per iteration.

The program (postfix, or RPN, notation) and the machine's registers (``pc`` and
``stack``) live in the shared state. ``exec`` reads them, runs the instruction at
``pc`` and writes the new registers back. Its first branch, ``set`` to ``ready``,
sends the step round again while ``pc`` is still inside the program; the second,
``complete``, lets the loop end. ``on_state_change`` prints the stack after every
instruction.

A second program that pops from an empty stack shows how an executor error ends
the loop with ``Failed``.

Run from the repository root:  python examples/ops/stack_machine.py
"""

from __future__ import annotations

import json
from typing import Any

import runfox as rfx

SPEC = """
name: rpn-machine
steps:
  - id: load
    fn: load_program
    input:
      source: {"var": "input.source"}

  - id: exec
    fn: execute_instruction
    depends_on: [load]
    input:
      program: {"var": "state.program"}
      pc: {"var": "state.pc"}
      stack: {"var": "state.stack"}
    branch:
      - condition: {"<": [{"var": "pc"}, {"var": "state.size"}]}
        action: {set: steps.exec.status, value: ready}
      - condition: true
        action: complete

outputs:
  value: {"var": "state.stack.0"}
  depth: {"var": "state.depth"}
  instructions_run: {"var": "state.pc"}
"""

BINARY = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
}


def execute(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    if fn == "load_program":
        program = inputs["source"].split()
        return {"program": program, "size": len(program), "pc": 0, "stack": []}
    if fn == "execute_instruction":
        pc, stack = inputs["pc"], list(inputs["stack"])
        token = inputs["program"][pc]
        needs = 2 if token in BINARY or token == "swap" else 1 if token == "dup" else 0
        if len(stack) < needs:
            raise IndexError(f"stack underflow: {token!r} at pc {pc} needs {needs} value(s)")
        if token in BINARY:
            b, a = stack.pop(), stack.pop()
            stack.append(BINARY[token](a, b))
        elif token == "dup":
            stack.append(stack[-1])
        elif token == "swap":
            stack[-1], stack[-2] = stack[-2], stack[-1]
        else:
            stack.append(int(token))
        return {"pc": pc + 1, "stack": stack, "depth": len(stack), "last": token}
    raise ValueError(f"unknown fn {fn!r}")


def trace(wf_id: str, previous: dict[str, Any], new: dict[str, Any], event: Any) -> None:
    """on_state_change: print the machine after each instruction."""
    if event.step_id == "exec":
        print(f"  run {event.run_id:>2}: {new['last']:>4}  ->  stack {new['stack']}")


def run(backend: rfx.Backend, source: str) -> None:
    print(f"program: {source}")
    wf = rfx.Workflow.from_yaml(SPEC, backend, inputs={"source": source})
    result = wf.run()
    print(f"  result: {type(result).__name__}")
    if isinstance(result, rfx.Failed):
        print(f"  error: {result.error['type']}: {result.error['message']}")
    else:
        print(f"  outcome: {json.dumps(result.outcome, sort_keys=True)}")


def main() -> None:
    backend = rfx.Backend(executor=execute, on_state_change=trace)
    run(backend, "4 6 + 3 * 2 swap - dup *")
    run(backend, "5 + 1")


if __name__ == "__main__":
    main()
