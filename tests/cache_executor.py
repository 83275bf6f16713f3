"""For tests/test_cache.py's process tests: ``cache_executor:execute`` logs one line per
call (``$RUNFOX_TEST_LOG``) and returns ``{"v": x + k}``, as ``CountingExecutor`` does.

``python cache_executor.py invalidate DB ID STEP`` reopens STEP in execution ID of the
SQLite file DB and runs it to its end in this process, with the same executor.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from proctools import append_line


def execute(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    append_line(fn)
    return {"v": inputs["x"] + inputs.get("k", 1)}


def main(argv: list[str]) -> int:
    from runfox.backend import Backend, InProcessRunner
    from runfox.backend.sql import SqlStore
    from runfox.workflow import Workflow

    url, wf_id, step = argv
    store = SqlStore(url)
    try:
        wf = Workflow(wf_id, Backend(store=store, runner=InProcessRunner(), executor=execute,
                                     poll_interval=0.02))
        reopened = wf.invalidate(step)
        result = wf.run(timeout=60)
        print(json.dumps({"reopened": reopened, "outcome": result.outcome,
                          "cached": wf.steps_cached}))
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
