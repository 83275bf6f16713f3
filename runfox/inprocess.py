"""``InProcessWorker``: the smallest worker harness, for local use and tests.

It belongs to the workers layer (it calls the executor), so the Runner
contract in ``runfox.backend.runner`` does not import it: the arrow points from
the harness down to the queue. ``runfox.backend`` still exports it under the
seed's name.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .authoring.aio import run_coroutine
from .execution import Executor, arun_job, is_async, run_job
from .results import DispatchJob

if TYPE_CHECKING:
    from .backend.runner import Runner

__all__ = ["InProcessWorker"]


class InProcessWorker:
    """Runs a runner's pending jobs through an executor, in the calling thread.

    ``run`` takes every pending job, calls the executor for each (an exception or
    a bad return value becomes an error result, as in every harness) and submits
    the results to the runner, where the next ``gather`` finds them. A result the
    runner cannot take now (the database is locked or restarting) is kept and
    submitted first on the next ``run``, so no job runs twice because of it.

    Sync jobs run one after another; the async ones of a round (``is_async``)
    run together as coroutines on one event loop (``asyncio.run``, or a helper
    thread's loop when called from inside a running loop). ``runfox.context()``
    is set for each; its ``cancelled`` stays false (nothing here watches the
    execution while a step runs) and ``heartbeat()`` does nothing.
    """

    def __init__(self, runner: Runner, executor: Executor) -> None:
        self.runner = runner
        self.executor = executor
        self._unsent: list[tuple[DispatchJob, dict[str, Any]]] = []

    def run(self, workflow_execution_id: str | None = None) -> int:
        """Execute every pending job; return how many ran.

        ``workflow_execution_id`` is accepted for the seed's call shape; jobs of
        every execution on the runner are run.
        """
        self._send()  # results an outage kept back; raises while it goes on
        jobs = self.runner.take_pending_jobs()
        outputs: dict[str, dict[str, Any]] = {}
        waiting = [job for job in jobs if is_async(self.executor, job.fn)]
        if waiting:
            for job, output in zip(waiting, run_coroutine(self._gather(waiting)),
                                   strict=True):
                outputs[job.key] = output
        for job in jobs:
            done = outputs.get(job.key)
            self._unsent.append((job, done if done is not None
                                 else run_job(self.executor, job)))
        self._send()
        return len(jobs)

    async def _gather(self, jobs: list[DispatchJob]) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(arun_job(self.executor, job) for job in jobs)))

    def _send(self) -> None:
        while self._unsent:
            job, output = self._unsent[0]
            self.runner.submit_work_result(job.workflow_execution_id, job.step_id, output,
                                           job.run_id)
            self._unsent.pop(0)
