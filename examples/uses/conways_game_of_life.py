"""Conway's Game of Life as a loop: one step per generation, the board in the shared state.

``setup`` parses the starting board into the state. ``tick`` reads the board from
the state, computes the next generation and writes it back; its ``set`` branch
sends it round again until the requested number of generations has been reached,
and the ``complete`` branch ends the loop. Cells beyond the edge count as dead.
An ``on_state_change`` callback collects every board, and the script prints them
side by side: a glider crawling down to the right, and a blinker flipping.

Run from the repository root:  python examples/uses/conways_game_of_life.py
"""

from __future__ import annotations

import json
from typing import Any

import runfox as rfx

SPEC = """
name: game-of-life
steps:
  - id: setup
    fn: setup
    input:
      rows: {"var": "input.board"}

  - id: tick
    fn: tick
    depends_on: [setup]
    input:
      board: {"var": "state.board"}
      generation: {"var": "state.generation"}
    branch:
      - condition: {"<": [{"var": "generation"}, {"var": "input.generations"}]}
        action: {set: steps.tick.status, value: ready}
      - condition: true
        action: complete

outputs:
  generation: {"var": "state.generation"}
  population: {"var": "state.population"}
  board: {"var": "state.board"}
"""

START = [
    ".#........",
    "..#.......",
    "###.......",
    "..........",
    ".......#..",
    ".......#..",
    ".......#..",
    "..........",
]


def count(board: list[str]) -> int:
    return sum(row.count("#") for row in board)


def execute(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    if fn == "setup":
        board = list(inputs["rows"])
        return {"board": board, "generation": 0, "population": count(board)}
    if fn == "tick":
        board = inputs["board"]
        height, width = len(board), len(board[0])

        def alive(r: int, c: int) -> bool:
            return 0 <= r < height and 0 <= c < width and board[r][c] == "#"

        nxt = []
        for r in range(height):
            row = ""
            for c in range(width):
                n = sum(alive(r + dr, c + dc)
                        for dr in (-1, 0, 1) for dc in (-1, 0, 1) if dr or dc)
                row += "#" if n == 3 or (n == 2 and alive(r, c)) else "."
            nxt.append(row)
        return {"board": nxt, "generation": inputs["generation"] + 1,
                "population": count(nxt)}
    raise ValueError(f"unknown fn {fn!r}")


def main() -> None:
    boards: list[tuple[int, list[str]]] = []

    def collect(wf_id: str, previous: dict[str, Any], new: dict[str, Any]) -> None:
        boards.append((new["generation"], new["board"]))

    backend = rfx.Backend(executor=execute, on_state_change=collect)
    wf = rfx.Workflow.from_yaml(SPEC, backend, inputs={"board": START, "generations": 4})
    result = wf.run()

    gap = "   "
    print(gap.join(f"gen {g:<6}" for g, _ in boards).rstrip())
    for r in range(len(START)):
        print(gap.join(board[r] for _, board in boards))
    print(f"populations: {[count(b) for _, b in boards]}")
    print(f"result: {type(result).__name__}")
    print(f"outcome: {json.dumps(result.outcome, sort_keys=True)}")


if __name__ == "__main__":
    main()
