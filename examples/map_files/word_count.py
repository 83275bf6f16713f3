"""A map over files: one job per file in a folder, outputs gathered in file order.

``list_files`` lists the ``.txt`` files of ``input.directory``; ``count`` is a map
step (``map: {var: steps.list_files.output.files}``) that runs ``count_words`` once
per file name, with ``{var: item}`` (the name) and ``{var: index}`` in its input and
at most four files at once (``max_parallel: 4``); its output is the list of the
items' outputs in item order, which ``summarise`` reads as
``steps.count.output``. The spec is ``word_count.yaml`` beside this script; the
execution is stored in a SQLite file in a temporary folder.

Run from the repository root:  python examples/map_files/word_count.py [folder]
(without a folder it writes five small files to a temporary one first).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import runfox as rfx
from runfox.backend import SqliteStore

HERE = Path(__file__).resolve().parent

SAMPLES = {
    "a-harbour.txt": "boats rock in the harbour at dusk",
    "b-market.txt": "the market opens early and closes late on saturdays",
    "c-rain.txt": "rain",
    "d-train.txt": "the last train leaves at ten",
    "e-notes.txt": "buy bread\nfix the bike\ncall home",
}


def execute(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    if fn == "list_files":
        files = sorted(p.name for p in Path(inputs["directory"]).glob("*.txt"))
        return {"files": files, "count": len(files)}
    if fn == "count_words":
        text = (Path(inputs["directory"]) / inputs["name"]).read_text()
        return {"name": inputs["name"], "index": inputs["index"], "words": len(text.split())}
    if fn == "summarise":
        counts = inputs["counts"]
        largest = max(counts, key=lambda c: c["words"])["name"] if counts else None
        return {"words": sum(c["words"] for c in counts), "largest": largest}
    raise ValueError(f"unknown fn {fn!r}")


def run(directory: Path, db: Path) -> None:
    backend = rfx.Backend(executor=execute, store=SqliteStore(f"sqlite:///{db}"))
    text = (HERE / "word_count.yaml").read_text()
    wf = rfx.Workflow.from_yaml(text, backend, inputs={"directory": str(directory)})
    result = wf.run(timeout=60)
    print(f"result: {type(result).__name__}")
    record = wf.record
    count = record.steps["count"]
    print(f"map step 'count': {count.status.value}, {count.items} items")
    for entry in count.output or []:
        print(f"  [{entry['index']}] {entry['name']:<14} {entry['words']:>3} words")
    print(f"outcome: {json.dumps(result.outcome, sort_keys=True)}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if len(sys.argv) > 1:
            directory = Path(sys.argv[1])
        else:
            directory = Path(tmp) / "texts"
            directory.mkdir()
            for name, body in SAMPLES.items():
                (directory / name).write_text(body)
        run(directory, Path(tmp) / "runfox.db")


if __name__ == "__main__":
    main()
