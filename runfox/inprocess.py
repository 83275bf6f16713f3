"""``InProcessWorker``: the smallest worker harness, for local use and tests.

It belongs to the workers layer (it calls the executor), so the Runner
contract in ``runfox.backend.runner`` does not import it: the arrow points from
the harness down to the queue. ``runfox.backend`` still exports it under the
seed's name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .execution import Executor, run_job

if TYPE_CHECKING:
    from .backend.runner import Runner

__all__ = ["InProcessWorker"]


class InProcessWorker:
    """Runs a runner's pending jobs through an executor, in the calling thread.

    ``run`` takes every pending job, calls the executor for each (an exception or
    a bad return value becomes an error result, as in every harness) and submits
    the results to the runner, where the next ``gather`` finds them.
    """

    def __init__(self, runner: Runner, executor: Executor) -> None:
        self.runner = runner
        self.executor = executor

    def run(self, workflow_execution_id: str | None = None) -> int:
        """Execute every pending job; return how many ran.

        ``workflow_execution_id`` is accepted for the seed's call shape; jobs of
        every execution on the runner are run.
        """
        jobs = self.runner.take_pending_jobs()
        for job in jobs:
            output = run_job(self.executor, job)
            self.runner.submit_work_result(job.workflow_execution_id, job.step_id, output,
                                           job.run_id)
        return len(jobs)
