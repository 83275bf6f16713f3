"""``SqlRunner``: the job queue as the ``runfox_tasks`` table.

One row per job ``(workflow_execution_id, step_id, run_id)``:

- ``dispatch`` inserts rows if absent; a row that exists, in whatever state,
  is left alone, so dispatching again after a crash never duplicates work.
- ``take_pending_jobs(limit, lease)`` claims rows with ``state = 'queued'`` whose
  ``visible_at`` has passed: ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL
  and MySQL/MariaDB, one ``BEGIN IMMEDIATE`` transaction on SQLite, so two
  workers never take the same job. A claim moves ``visible_at`` to the end of
  the lease (on the database clock) and counts a delivery. When the lease runs
  out without a result the job is claimable again.
- A job delivered ``max_deliveries`` times whose lease ran out every time (a
  worker crashed or hung on it each time) is not delivered again: it gets an
  error result (``LeaseExpired``), which the graph treats as a failed attempt
  (retried while the step has attempts left, else the step fails).
- ``heartbeat`` extends a lease only while this claim still holds the job;
  ``release`` makes it claimable at once.
- ``submit_work_result`` turns the row ``done`` with its result, once: a second
  result for the same job returns ``False``.
- ``gather`` takes the ``done`` rows of one execution and deletes them in one
  transaction (``SKIP LOCKED``: a concurrent gatherer never gets the same row).
  Once gathered the runner forgets the job, as ``InProcessRunner`` does, so a
  re-dispatch after a lost result queues it again.

A row that cannot be decoded is logged with its job key and deleted; the
record still shows the step in progress, so the stale-job sweep
(``Backend.redispatch_stale``) dispatches it again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, exists, select, update
from sqlalchemy.engine import Connection, Engine, Row

from ...execution import error_output
from ...results import DispatchJob, WorkResult, job_key
from ..runner import Runner
from .database import Database, DuplicateRow
from .schema import tasks
from .store import dumps

__all__ = ["SqlRunner"]

logger = logging.getLogger("runfox.backend.sql")

QUEUED = "queued"
DONE = "done"
#: ``run_id`` stored for a result submitted without one and matching no queued job.
UNKNOWN_RUN = -1

t = tasks


class SqlRunner(Runner):
    """The job queue in SQLite, PostgreSQL or MySQL/MariaDB.

    Args:
        url, engine, create_tables, busy_timeout, sqlite_synchronous,
        engine_options: as for ``SqlStore``.
        lease: seconds a job taken without an explicit ``lease`` is held (the
            seed's ``take_pending_jobs()``); workers pass their own.
        max_deliveries: deliveries whose lease ran out before a job is given an
            error result instead of being delivered again; ``None`` never gives up.

    Raises:
        ValueError, BackendError: as for ``SqlStore``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        engine: Engine | None = None,
        create_tables: bool = True,
        lease: float = 300.0,
        max_deliveries: int | None = 5,
        busy_timeout: float | None = None,
        sqlite_synchronous: str | None = None,
        engine_options: dict[str, Any] | None = None,
        _database: Database | None = None,
    ) -> None:
        if lease <= 0:
            raise ValueError("lease must be > 0")
        if max_deliveries is not None and max_deliveries < 1:
            raise ValueError("max_deliveries must be >= 1 or None")
        if _database is None:
            _database = Database.open(url, engine=engine, create_tables=create_tables,
                                      busy_timeout=busy_timeout,
                                      sqlite_synchronous=sqlite_synchronous,
                                      engine_options=engine_options)
        self._db = _database
        self.lease = lease
        self.max_deliveries = max_deliveries
        self._closed = False
        # job key -> delivery number of the jobs this runner claimed: a heartbeat
        # or release must not touch a later claim of the same job by another worker.
        self._held: dict[str, int] = {}
        self._held_lock = threading.Lock()
        now = self._db.dialect.now()
        self._now = now
        self._insert = self._db.dialect.insert_if_absent(t).values(visible_at=now)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (shared with a store built by ``parts_from_url``)."""
        return self._db.engine

    def __repr__(self) -> str:
        return f"SqlRunner({self._db.display_url!r})"

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._db.release()

    # -- queueing -----------------------------------------------------------------

    def dispatch(self, workflow_execution_id: str, jobs: Sequence[DispatchJob]) -> None:
        if not jobs:
            return
        created = time.time()
        rows = [{"workflow_execution_id": j.workflow_execution_id, "step_id": j.step_id,
                 "run_id": j.run_id, "state": QUEUED, "deliveries": 0,
                 "payload": dumps(j.to_dict()), "result": None, "created_at": created}
                for j in jobs]
        self._db.run(lambda conn: conn.execute(self._insert, rows),
                     what=f"dispatch jobs of {workflow_execution_id!r}")

    def list_pending_jobs(self) -> list[DispatchJob]:
        query = (select(t.c.workflow_execution_id, t.c.step_id, t.c.run_id, t.c.payload)
                 .where(t.c.state == QUEUED, t.c.visible_at <= self._now).order_by(t.c.id))
        rows = self._db.run(lambda conn: conn.execute(query).all(), write=False,
                            what="list pending jobs")
        jobs = []
        for row in rows:
            job = _decode_job(row)
            if job is not None:
                jobs.append(job)
        return jobs

    def take_pending_jobs(
        self, limit: int | None = None, lease: float | None = None
    ) -> list[DispatchJob]:
        if limit is not None and limit <= 0:
            return []
        lease = self.lease if lease is None else lease
        query = (select(t.c.id, t.c.workflow_execution_id, t.c.step_id, t.c.run_id,
                        t.c.deliveries, t.c.payload)
                 .where(t.c.state == QUEUED, t.c.visible_at <= self._now)
                 .order_by(t.c.id).limit(limit).with_for_update(skip_locked=True))

        def work(conn: Connection) -> list[tuple[DispatchJob, int, int]]:  # job, id, token
            rows = conn.execute(query).all()
            claimed, expired, corrupt = [], [], []
            for row in rows:
                if self.max_deliveries is not None and row.deliveries >= self.max_deliveries:
                    expired.append(row)
                    continue
                job = _decode_job(row)
                if job is None:
                    corrupt.append(row.id)
                else:
                    claimed.append((job, row.id, row.deliveries + 1))
            if claimed:
                conn.execute(update(t).where(t.c.id.in_([c[1] for c in claimed]))
                             .values(visible_at=self._now + lease,
                                     deliveries=t.c.deliveries + 1))
            if expired:
                self._give_up(conn, expired)
            if corrupt:
                conn.execute(delete(t).where(t.c.id.in_(corrupt)))
            return claimed

        claimed = self._db.run(work, what="claim jobs")
        with self._held_lock:
            for job, _, token in claimed:
                self._held[job.key] = token
        return [job for job, _, _ in claimed]

    def _give_up(self, conn: Connection, rows: list[Row[Any]]) -> None:
        for row in rows:
            key = job_key(row.workflow_execution_id, row.step_id, row.run_id)
            logger.warning("job %s: lease expired on all %d deliveries; recording an error "
                           "result instead of delivering it again", key, row.deliveries)
            output = error_output(
                "LeaseExpired",
                f"job {key} was delivered {row.deliveries} times and every lease ran out "
                "without a result (the worker died or hung)")
            conn.execute(update(t).where(t.c.id == row.id)
                         .values(state=DONE, visible_at=None, result=dumps(output)))

    # -- leases ---------------------------------------------------------------------

    def heartbeat(self, job: DispatchJob, lease: float) -> bool:
        """Extend the lease; ``False`` once the job has a result or another claim.

        A job this runner did not claim (another process's runner) is extended
        only while its current lease is still running.
        """
        with self._held_lock:
            token = self._held.get(job.key)
        query = _by_key(update(t), job).where(t.c.state == QUEUED)
        if token is not None:
            query = query.where(t.c.deliveries == token)
        else:
            query = query.where(t.c.visible_at > self._now)
        query = query.values(visible_at=self._now + lease)
        extended = self._db.run(lambda conn: conn.execute(query).rowcount,
                                what=f"extend the lease of {job.key}")
        if not extended:
            self._forget(job)
        return bool(extended)

    def release(self, job: DispatchJob) -> None:
        token = self._forget(job)
        query = _by_key(update(t), job).where(t.c.state == QUEUED)
        if token is not None:
            query = query.where(t.c.deliveries == token)
        else:
            query = query.where(t.c.visible_at > self._now)  # only a job someone holds
        # A released job was not delivered in vain: it does not count towards
        # max_deliveries.
        query = query.values(visible_at=self._now, deliveries=t.c.deliveries - 1)
        self._db.run(lambda conn: conn.execute(query), what=f"release {job.key}")

    def _forget(self, job: DispatchJob) -> int | None:
        with self._held_lock:
            return self._held.pop(job.key, None)

    # -- results --------------------------------------------------------------------

    def submit_work_result(
        self,
        workflow_execution_id: str,
        step_id: str,
        output: dict[str, Any],
        run_id: int | None = None,
    ) -> bool:
        try:
            result = dumps(output)
        except (TypeError, ValueError) as exc:
            # Only JSON can be stored; the graph counts this as a failed attempt.
            result = dumps(error_output("InvalidOutput", f"the output is not JSON: {exc}"))
        where = (t.c.workflow_execution_id == workflow_execution_id, t.c.step_id == step_id)

        def work(conn: Connection) -> bool:
            run = run_id
            if run is None:  # the seed's form: the job this step has queued, if any
                run = conn.execute(select(t.c.run_id).where(*where, t.c.state == QUEUED)
                                   .order_by(t.c.run_id.desc()).limit(1)).scalar()
            if run is not None:
                done = conn.execute(update(t).where(*where, t.c.run_id == run,
                                                    t.c.state == QUEUED)
                                    .values(state=DONE, result=result, visible_at=None))
                if done.rowcount:
                    return True
            known = conn.execute(select(exists().where(
                *where, t.c.run_id == run if run is not None else t.c.state == DONE))).scalar()
            if known:
                return False
            # A result for a job this runner no longer (or never) knew: keep it;
            # the graph ignores it if the step has moved on.
            row = {"workflow_execution_id": workflow_execution_id, "step_id": step_id,
                   "run_id": UNKNOWN_RUN if run is None else run, "state": DONE,
                   "deliveries": 0, "payload": "{}", "result": result,
                   "visible_at": None, "created_at": time.time()}
            conn.execute(t.insert(), row)  # a racing twin makes this a DuplicateRow
            return True

        try:
            recorded = self._db.run(work, what=f"record the result of {step_id!r}",
                                    duplicate_ok=True)
        except DuplicateRow:
            recorded = False  # another submitter inserted the same job just now
        if run_id is not None:
            with self._held_lock:
                self._held.pop(job_key(workflow_execution_id, step_id, run_id), None)
        return recorded

    def gather(self, workflow_execution_id: str) -> list[WorkResult]:
        query = (select(t.c.id, t.c.step_id, t.c.run_id, t.c.result)
                 .where(t.c.workflow_execution_id == workflow_execution_id, t.c.state == DONE)
                 .order_by(t.c.id).with_for_update(skip_locked=True))

        def work(conn: Connection) -> Sequence[Row[Any]]:
            rows = conn.execute(query).all()
            if rows:
                conn.execute(delete(t).where(t.c.id.in_([r.id for r in rows])))
            return rows

        rows = self._db.run(work, what=f"gather results of {workflow_execution_id!r}")
        results = []
        for row in rows:
            run = None if row.run_id == UNKNOWN_RUN else row.run_id
            try:
                output = json.loads(row.result)
            except (TypeError, ValueError) as exc:
                logger.warning("dropping corrupt result of job %s: %s (the step will be "
                               "dispatched again)", job_key(workflow_execution_id,
                                                            row.step_id, row.run_id), exc)
                continue
            results.append(WorkResult(row.step_id, output, run))
        return results

    def cancel(self, workflow_execution_id: str) -> None:
        query = delete(t).where(t.c.workflow_execution_id == workflow_execution_id,
                                t.c.state == QUEUED, t.c.visible_at <= self._now)
        self._db.run(lambda conn: conn.execute(query),
                     what=f"cancel jobs of {workflow_execution_id!r}")


def _by_key(query: Any, job: DispatchJob) -> Any:
    return query.where(t.c.workflow_execution_id == job.workflow_execution_id,
                       t.c.step_id == job.step_id, t.c.run_id == job.run_id)


def _decode_job(row: Row[Any]) -> DispatchJob | None:
    """The job a row holds, or ``None`` (logged with its key) if it cannot be decoded."""
    try:
        job = DispatchJob.from_dict(json.loads(row.payload))
    except (TypeError, ValueError) as exc:
        job = None
        reason = str(exc)
    else:
        if (job.workflow_execution_id, job.step_id, job.run_id) == (
                row.workflow_execution_id, row.step_id, row.run_id):
            return job
        reason = f"the payload describes job {job.key}"
    logger.warning("corrupt job row %s skipped: %s",
                   job_key(row.workflow_execution_id, row.step_id, row.run_id), reason)
    return None
