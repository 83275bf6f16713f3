"""``InProcessWorker``: the smallest worker harness, for local use and tests.

It belongs to the workers layer (it calls the executor), so the Runner
contract in ``runfox.backend.runner`` does not import it: the arrow points from
the harness down to the queue. ``runfox.backend`` still exports it under the
seed's name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .execution import Executor, run_job
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
        for job in jobs:
            self._unsent.append((job, run_job(self.executor, job)))
        self._send()
        return len(jobs)

    def _send(self) -> None:
        while self._unsent:
            job, output = self._unsent[0]
            self.runner.submit_work_result(job.workflow_execution_id, job.step_id, output,
                                           job.run_id)
            self._unsent.pop(0)
