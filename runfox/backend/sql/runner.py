"""``SqlRunner``: the job queue as the ``runfox_tasks`` table.

One row per job ``(workflow_execution_id, step_id, run_id)``:

- ``dispatch`` inserts rows if absent; a row that exists, in whatever state,
  is left alone, so dispatching again after a crash never duplicates work.
- ``take_pending_jobs(limit, lease)`` claims rows with ``state = 'queued'`` whose
  ``visible_at`` has passed, oldest ``visible_at`` first, reading the index
  ``(state, visible_at, id)`` in its own order (a constant plan, however long
  the queue; ``tests/test_claim_plans.py`` checks it with EXPLAIN). One
  statement where the database allows (``Dialect.claim_form``): on PostgreSQL
  ``UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED LIMIT n) ... RETURNING``
  in autocommit, on SQLite ``UPDATE ... WHERE id IN (...) RETURNING`` inside
  ``BEGIN IMMEDIATE``; on MySQL/MariaDB ``SELECT ... FOR UPDATE SKIP LOCKED``
  and an ``UPDATE`` in one transaction. Two workers never take the same job. A
  claim moves ``visible_at`` to the end of the lease (on the database clock)
  and counts a delivery. When the lease runs out without a result the job is
  claimable again.
- Wake-ups (``watch_jobs``, ``runfox.backend.sql.listen``): ``dispatch`` and
  ``release`` wake this process's watching workers after they commit, and on
  PostgreSQL send ``NOTIFY runfox_jobs`` in their unit of work, which a
  listening connection turns into wake-ups in every process.
- Each claimed job carries ``delivery`` (``deliveries`` after this claim). A
  worker that gets a job with ``delivery > 1`` knows the lease of an earlier
  delivery ran out and reports the attempt as ``WorkerLost`` instead of running
  it (see ``runfox.worker``); the graph then retries it under a new ``run_id``.
- As a backstop, a job delivered ``max_deliveries`` times whose lease ran out
  every time (no worker even reported it lost) is not delivered again: it gets
  an error result (``LeaseExpired``), which the graph treats as a failed attempt.
- ``heartbeat`` extends a lease only while this claim still holds the job (its
  random claim token still on the row); ``release`` makes it claimable at once.
- ``submit_work_result`` turns the row ``done`` with its result, once: a second
  result for the same job returns ``False``. A large result output is packed
  per top-level key into ``runfox_payloads`` first (``Offloader.pack_output``;
  the runner of ``parts_from_url`` shares the store's offloader), so the row
  holds references and the record that applies the result refers to the same
  blobs; ``gather`` resolves them.
- ``gather`` takes the ``done`` rows of one execution and deletes them
  atomically: one ``DELETE ... RETURNING`` where the database has it (PostgreSQL,
  MariaDB, SQLite), else ``SELECT ... FOR UPDATE SKIP LOCKED`` and ``DELETE`` in
  one transaction; two gatherers never both get a row. Once gathered the runner
  forgets the job, as ``InProcessRunner`` does, so a re-dispatch after a lost
  result queues it again. Its outputs are ``jsonvalue.Decoded``: runfox's own,
  so the graph checks them without copying them deeply.

Concurrency slots (``runfox_slots``, see ``schema``): dispatching a job with a
``concurrency_key`` creates the key's slot rows ``0..limit-1`` if absent. The
claim gives each such job a free slot row (no holder, or its ``lease_end``
passed), found with ``SELECT ... FOR UPDATE SKIP LOCKED`` and taken with an
UPDATE that stamps the job, the claim token and the job's lease end; a job
whose key has no free slot stays queued (a one-statement claim that took it
gives it back as it was: lease end, claim token, delivery count), and the
claim reads further rows to fill ``limit``. Heartbeats extend the slot's lease with
the job's; ack, release and a submitted result free it. Since a slot row is
taken only under its row lock (or SQLite's single writer) and only when free,
a key never has more live holders than slot rows, and a job with limit ``n``
may use only rows ``0..n-1``.

A row that cannot be decoded is logged with its job key and deleted; the
record still shows the step in progress, so the stale-job sweep
(``Backend.redispatch_stale``) dispatches it again.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import bindparam, delete, exists, func, null, select, update
from sqlalchemy.engine import Connection, Engine

from ...errors import PayloadMissing
from ...jsonvalue import decoded, error_output
from ...results import DispatchJob, WorkResult, job_key
from ..payload_store import DEFAULT_OFFLOAD_BYTES, Offloader, offload_threshold
from ..runner import RUNNING, JobState, Runner
from .database import Database, DatabaseUser, DuplicateRow, HotStatement
from .dialects import CLAIM_FROM, CLAIM_IN, Dialect
from .listen import signal_for, watchable
from .payloads import SqlPayloads
from .schema import slots, tasks
from .store import dumps

__all__ = ["SqlRunner"]

logger = logging.getLogger("runfox.backend.sql")

QUEUED = "queued"
DONE = "done"
#: A job whose result its worker applied itself. The row stays (without its
#: payload) as a tombstone, so a re-dispatch computed from a record read just
#: before the result was applied cannot queue the job again; it is deleted after
#: ``ACKED_TTL`` seconds.
ACKED = "acked"
ACKED_TTL = 3600.0
#: Tombstones are purged by one ``ack`` in this many.
PURGE_EVERY = 500
#: ``run_id`` stored for a result submitted without one and matching no queued job.
UNKNOWN_RUN = -1

t = tasks
sl = slots
#: Rows read per page by a claim that had to skip jobs whose key was full.
_PAGE = 50


class _Queries:
    """Every statement the runner runs, built once (SQLAlchemy then reuses the
    compiled form) for one dialect: the database clock differs per database."""

    def __init__(self, dialect: Dialect) -> None:
        now = dialect.now()
        job = (t.c.workflow_execution_id == bindparam("wf"), t.c.step_id == bindparam("step"),
               t.c.run_id == bindparam("run"))
        claimable = (t.c.state == QUEUED, t.c.visible_at <= now)
        held = (t.c.state == QUEUED, t.c.visible_at > now)
        ids = t.c.id.in_(bindparam("ids", expanding=True))
        self.insert = dialect.insert_if_absent(t).values(visible_at=now)
        # A job dispatched and claimed at once (``dispatch_and_take``).
        self.insert_taken = dialect.insert_if_absent(t).values(
            visible_at=now + bindparam("lease"))
        self.pending = (select(t.c.workflow_execution_id, t.c.step_id, t.c.run_id, t.c.payload)
                        .where(*claimable).order_by(t.c.id))
        # Claims walk ix_runfox_tasks_queue (state, visible_at, id) in its own
        # order, with a clock that is constant per statement, so their plan does
        # not depend on how many jobs wait or how many tombstones there are.
        due = (t.c.state == QUEUED, t.c.visible_at <= dialect.claim_clock())
        order = (t.c.visible_at, t.c.id)
        claimed = {"visible_at": now + bindparam("lease"), "deliveries": t.c.deliveries + 1,
                   "claim_token": bindparam("token")}
        # The SELECT form (MySQL/MariaDB, and after a claim met full keys):
        # candidates locked, then stamped by mark_claimed.
        claim = (select(t.c.id, t.c.workflow_execution_id, t.c.step_id, t.c.run_id,
                        t.c.deliveries, t.c.payload, t.c.visible_at).where(*due))
        # Rows after the cursor (visible_at, id), as one index range plus a filter
        # (an OR of two ranges would make the planners merge and sort).
        after = ((t.c.visible_at >= bindparam("after_at"))
                 & ~((t.c.visible_at == bindparam("after_at")) & (t.c.id <= bindparam("after"))))
        self.claim_all = claim.order_by(*order).with_for_update(skip_locked=True)
        self.claim_some = (claim.order_by(*order).limit(bindparam("limit"))
                           .with_for_update(skip_locked=True))
        self.claim_more = (claim.where(after).order_by(*order).limit(bindparam("limit"))
                           .with_for_update(skip_locked=True))
        self.mark_claimed = update(t).where(ids).values(claimed)
        # Is anything claimable? A read: on SQLite it needs no write lock.
        self.peek = select(t.c.id).where(*due).order_by(*order).limit(1)
        # The one-statement forms: each returns the claimed rows with what a
        # claim that must give a row back (its key is full) restores.
        returned = (t.c.id, t.c.workflow_execution_id, t.c.step_id, t.c.run_id,
                    t.c.deliveries, t.c.payload)
        self.take_some: Any = None
        self.take_all: Any = None
        if dialect.claim_form == CLAIM_FROM:
            for name, limited in (("take_some", True), ("take_all", False)):
                pick = select(t.c.id, t.c.visible_at, t.c.claim_token).where(*due)
                pick = pick.order_by(*order)
                if limited:
                    pick = pick.limit(bindparam("limit"))
                c = pick.with_for_update(skip_locked=True).subquery("c")
                setattr(self, name, update(t).where(t.c.id == c.c.id).values(claimed).returning(
                    *returned, c.c.visible_at.label("old_at"),
                    c.c.claim_token.label("old_token")))
        elif dialect.claim_form == CLAIM_IN:
            # SQLite's RETURNING shows only new values: a row given back gets its
            # dispatch time as its place in the queue, and no claim token.
            for name, limited in (("take_some", True), ("take_all", False)):
                pick = select(t.c.id).where(*due).order_by(*order)
                if limited:
                    pick = pick.limit(bindparam("limit"))
                setattr(self, name, update(t).where(t.c.id.in_(pick.scalar_subquery()))
                        .values(claimed).returning(*returned, t.c.created_at.label("old_at"),
                                                   null().label("old_token")))
        self.unclaim = (update(t).where(t.c.id == bindparam("row"),
                                        t.c.claim_token == bindparam("token"))
                        .values(visible_at=bindparam("old_at"), deliveries=t.c.deliveries - 1,
                                claim_token=bindparam("old_token")))
        self.give_up = (update(t).where(t.c.id == bindparam("row"))
                        .values(state=DONE, visible_at=None, result=bindparam("res"),
                                deliveries=bindparam("n")))
        self.delete_ids = delete(t).where(ids)
        # A heartbeat or release by the claimer matches its claim token; by
        # anyone else, only a job whose lease is running.
        mine = (*job, t.c.state == QUEUED, t.c.claim_token == bindparam("token"))
        self.extend_mine = update(t).where(*mine).values(visible_at=now + bindparam("lease"))
        self.extend_any = update(t).where(*job, *held).values(visible_at=now + bindparam("lease"))
        # A released job was not delivered in vain: it does not count towards
        # max_deliveries.
        released = {"visible_at": now, "deliveries": t.c.deliveries - 1, "claim_token": None}
        self.release_mine = update(t).where(*mine).values(released)
        self.release_any = update(t).where(*job, *held).values(released)
        self.queued_run = (select(t.c.run_id)
                           .where(job[0], job[1], t.c.state == QUEUED)
                           .order_by(t.c.run_id.desc()).limit(1))
        self.finish = (update(t).where(*job, t.c.state == QUEUED)
                       .values(state=DONE, result=bindparam("res"), visible_at=None))
        self.job_known = select(exists().where(*job))
        self.result_waiting = select(exists().where(job[0], job[1], t.c.state == DONE))
        self.insert_result = t.insert()
        results = (t.c.id, t.c.step_id, t.c.run_id, t.c.result)
        self.results = (select(*results).where(job[0], t.c.state == DONE).order_by(t.c.id)
                        .with_for_update(skip_locked=True))
        # Where the database has DELETE ... RETURNING, gathering is that one
        # statement: two gatherers cannot both delete (and so both take) a row.
        self.take_results = delete(t).where(job[0], t.c.state == DONE).returning(*results)
        self.cancel = delete(t).where(job[0], *claimable)
        # Inspection: one execution's rows, and the number of claimable jobs.
        self.states = select(t.c.step_id, t.c.run_id, t.c.state, t.c.visible_at,
                             t.c.deliveries, (t.c.visible_at > now).label("held")
                             ).where(job[0])
        self.depth = select(func.count()).select_from(t).where(*claimable)
        self.drop = delete(t).where(*job, t.c.state == QUEUED)
        self.acknowledge = (update(t).where(*job, t.c.state == QUEUED)
                            .values(state=ACKED, visible_at=now, payload="{}",
                                    claim_token=None))
        self.purge_acked = delete(t).where(t.c.state == ACKED,
                                           t.c.visible_at < now - bindparam("ttl"))
        # Concurrency slots. A slot is free when it names no job or its lease ended.
        self.add_slots = dialect.insert_if_absent(sl)
        self.free_slot = (select(sl.c.slot_no)
                          .where(sl.c.slot_key == bindparam("key"),
                                 sl.c.slot_no < bindparam("limit"),
                                 (sl.c.lease_end.is_(None)) | (sl.c.lease_end <= now))
                          .order_by(sl.c.slot_no).limit(1).with_for_update(skip_locked=True))
        self.take_slot = (update(sl).where(sl.c.slot_key == bindparam("key"),
                                           sl.c.slot_no == bindparam("no"))
                          .values(workflow_execution_id=bindparam("wf"),
                                  step_id=bindparam("step"), run_id=bindparam("run"),
                                  claim_token=bindparam("token"),
                                  lease_end=now + bindparam("lease")))
        holder = (sl.c.workflow_execution_id == bindparam("wf"),
                  sl.c.step_id == bindparam("step"), sl.c.run_id == bindparam("run"))
        self.extend_slot_mine = (update(sl).where(*holder,
                                                  sl.c.claim_token == bindparam("token"))
                                 .values(lease_end=now + bindparam("lease")))
        self.extend_slot_any = (update(sl).where(*holder, sl.c.lease_end > now)
                                .values(lease_end=now + bindparam("lease")))
        self.free_slots = update(sl).where(*holder).values(
            workflow_execution_id=None, step_id=None, run_id=None, claim_token=None,
            lease_end=None)


class SqlRunner(DatabaseUser, Runner):
    """The job queue in SQLite, PostgreSQL or MySQL/MariaDB.

    Args:
        url, engine, create_tables, busy_timeout, sqlite_synchronous,
        engine_options: as for ``SqlStore``.
        lease: seconds a job taken without an explicit ``lease`` is held (the
            seed's ``take_pending_jobs()``); workers pass their own.
        max_deliveries: deliveries whose lease ran out before a job is given an
            error result instead of being delivered again; ``None`` never gives up.
        notify: on PostgreSQL, send ``NOTIFY runfox_jobs`` with every dispatch and
            ``LISTEN`` while a worker watches (``watch_jobs``), so idle workers
            start new jobs at once; ``False`` saves the statement per dispatch
            (workers then find jobs by polling). Ignored elsewhere.
        offload: result outputs whose JSON is over this many bytes are packed
            per top-level key into ``runfox_payloads`` (as ``SqlStore``'s
            ``offload``); ``payloads`` is the ``Offloader`` that does it, which
            ``parts_from_url`` sets to the store's.

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
        notify: bool = True,
        busy_timeout: float | None = None,
        sqlite_synchronous: str | None = None,
        engine_options: dict[str, Any] | None = None,
        offload: int | str | None = None,
        _database: Database | None = None,
    ) -> None:
        if lease <= 0:
            raise ValueError("lease must be > 0")
        if max_deliveries is not None and max_deliveries < 1:
            raise ValueError("max_deliveries must be >= 1 or None")
        super().__init__(url, engine=engine, create_tables=create_tables,
                         busy_timeout=busy_timeout, sqlite_synchronous=sqlite_synchronous,
                         engine_options=engine_options, database=_database)
        self._q = _Queries(self._db.dialect)
        self.payloads = Offloader(SqlPayloads(self._db),
                                  offload_threshold(offload, DEFAULT_OFFLOAD_BYTES))
        # Queue and acknowledge run on every step: compiled once (``HotStatement``).
        self._hot_insert = HotStatement(self._db, self._q.insert)
        self._hot_insert_taken = HotStatement(self._db, self._q.insert_taken)
        self._hot_ack = HotStatement(self._db, self._q.acknowledge)
        self._hot_take = {limited: HotStatement(self._db, statement)
                          for limited, statement in ((True, self._q.take_some),
                                                     (False, self._q.take_all))
                          if statement is not None}
        self._notify = self._db.dialect.notify() if notify else None
        self._hot_notify = None if self._notify is None else HotStatement(self._db,
                                                                          self._notify)
        # SQLite: after a claim that found nothing, the next one first looks
        # with a read, so idle workers polling (or woken by any commit) do not
        # queue for the write lock behind the ones doing work.
        self._look_first = self._db.dialect.name == "sqlite"
        self._found_none = False
        self._signal = signal_for(self._db.engine)
        self.lease = lease
        self.max_deliveries = max_deliveries
        # job key -> claim token of the jobs this runner claimed: a heartbeat or
        # release must not touch a later claim of the same job by another worker.
        self._held: dict[str, int] = {}
        # Keys of the held jobs that hold a concurrency slot.
        self._slotted: set[str] = set()
        self._held_lock = threading.Lock()
        self._acks = 0

    # -- queueing -----------------------------------------------------------------

    def dispatch(self, workflow_execution_id: str, jobs: Sequence[DispatchJob]) -> None:
        self.dispatch_and_take(workflow_execution_id, jobs, 0, self.lease)

    def dispatch_and_take(self, workflow_execution_id: str, jobs: Sequence[DispatchJob],
                          limit: int, lease: float) -> list[DispatchJob]:
        """Queue ``jobs``; the first ``limit`` without a concurrency key are inserted
        already claimed by this runner (lease and claim token set, one delivery),
        which saves the caller a claim transaction per step."""
        if not jobs:
            return []
        taken = [job for job in jobs if job.concurrency_key is None][:max(limit, 0)]
        chosen = {id(job) for job in taken}  # by identity: jobs compare by value, slowly
        rest = [job for job in jobs if id(job) not in chosen] if taken else list(jobs)
        token = secrets.randbits(62) if taken else 0  # fits a signed BIGINT everywhere
        self._db.run(lambda conn: self.insert_jobs(conn, rest, taken, lease, token),
                     standalone=True, what=f"dispatch jobs of {workflow_execution_id!r}")
        if taken:
            # Held from the commit on (inside a joint unit the callback waits for it).
            self._db.after_commit(lambda: self._hold(taken, token))
        if rest:
            self._db.after_commit(self.jobs_queued)  # inside a joint unit: once it commits
        return [replace(job, delivery=1) for job in taken]

    def _hold(self, jobs: Sequence[DispatchJob], token: int) -> None:
        """Remember the claim token of jobs this runner claimed (for heartbeats)."""
        with self._held_lock:
            for job in jobs:
                self._held[job.key] = token

    def insert_jobs(self, conn: Connection, jobs: Sequence[DispatchJob],
                    taken: Sequence[DispatchJob] = (), lease: float = 0.0,
                    token: int | None = None) -> None:
        """Queue ``jobs`` inside the caller's unit of work ``conn`` (what
        ``dispatch`` runs): slot rows, job rows if absent, and on PostgreSQL a
        ``NOTIFY`` that listening workers hear when the unit commits. Call
        ``jobs_queued()`` after the commit to wake this process's workers.
        ``taken`` (no concurrency keys): rows inserted as claimed with ``token``
        for ``lease`` seconds, heard by no one."""
        created = time.time()

        def row(job: DispatchJob) -> dict[str, Any]:
            return {"workflow_execution_id": job.workflow_execution_id,
                    "step_id": job.step_id, "run_id": job.run_id, "state": QUEUED,
                    "deliveries": 0, "payload": dumps(job.to_dict()), "result": None,
                    "created_at": created}

        if taken:
            self._hot_insert_taken.execute(conn, [{**row(job), "deliveries": 1,
                                                   "claim_token": token, "lease": lease}
                                                  for job in taken])
        if not jobs:
            return
        # Slot rows first (in key order, so two dispatchers lock them alike): a
        # claimer that sees the job then finds its slots.
        wanted = sorted({(j.concurrency_key, n) for j in jobs if j.concurrency_key is not None
                         for n in range(j.concurrency_limit or 1)})
        if wanted:
            conn.execute(self._q.add_slots, [{"slot_key": key, "slot_no": n}
                                             for key, n in wanted])
        self._hot_insert.execute(conn, [row(job) for job in jobs])
        if self._hot_notify is not None:
            self._hot_notify.execute(conn, {})

    def jobs_queued(self) -> None:
        """Wake the workers of this process watching this database (``watch_jobs``)."""
        if self._signal.watched:
            self._signal.fire()

    def watch_jobs(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake()`` after this process queues jobs on this database and when
        any process does: on PostgreSQL with ``notify`` by ``LISTEN``, on an SQLite
        file when another connection commits (``runfox.backend.sql.listen``)."""
        engine = self._db.engine
        hear = watchable(engine) and (self._notify is not None or engine.dialect.name == "sqlite")
        return self._signal.add(wake, engine if hear else None)

    def list_pending_jobs(self) -> list[DispatchJob]:
        rows = self._db.run(lambda conn: conn.execute(self._q.pending).all(), write=False,
                            standalone=True, what="list pending jobs")
        return [job for job in map(_decode_job, rows) if job is not None]

    def take_pending_jobs(
        self, limit: int | None = None, lease: float | None = None
    ) -> list[DispatchJob]:
        if limit is not None and limit <= 0:
            return []
        lease = self.lease if lease is None else lease
        token = secrets.randbits(62)  # fits a signed BIGINT everywhere
        if self._look_first and self._found_none and self._db.run(
                lambda conn: conn.execute(self._q.peek).first(), write=False,
                standalone=True, what="look for jobs") is None:
            return []  # still nothing: the write lock was not taken
        if self._q.take_some is not None:
            claimed = self._claim_returning(limit, lease, token)
        else:
            claimed = self._db.run(lambda conn: self._claim_select(conn, limit, lease, token,
                                                                    set()), what="claim jobs")
        self._found_none = not claimed
        with self._held_lock:
            for job in claimed:
                self._held[job.key] = token
                if job.concurrency_key is not None:
                    self._slotted.add(job.key)
        return claimed

    def _claim_returning(self, limit: int | None, lease: float, token: int
                         ) -> list[DispatchJob]:
        """A claim as one ``UPDATE ... RETURNING``, then whatever its rows need.

        Most rows need nothing more. A row whose job has a concurrency key needs
        a slot, and is given back untouched (old lease end, old token, the
        delivery uncounted) when its key is full; a row past ``max_deliveries``
        gets its error result; an undecodable one is deleted. On PostgreSQL the
        UPDATE runs alone in autocommit (one round trip) and that follow-up in a
        transaction of its own: meanwhile its rows are held by this claim, so no
        one else sees them, and if the follow-up fails its rows come back when
        the lease ends, as a job would from a worker that died holding it. On
        SQLite both run in one ``BEGIN IMMEDIATE`` transaction.
        """
        q = self._q
        params: dict[str, Any] = {"lease": lease, "token": token}
        if limit is not None:
            params["limit"] = limit
        apart = self._db.dialect.claim_form == CLAIM_FROM

        def settle(conn: Connection, rows: Sequence[Any], before: int, page_full: bool
                   ) -> list[DispatchJob]:
            """``before``: jobs of this claim already kept; ``page_full``: the
            UPDATE took ``limit`` rows, so more may wait behind them."""
            claimed: list[DispatchJob] = []
            given_back, expired, corrupt = [], [], []
            full: set[tuple[str, int]] = set()
            for row in rows:
                if self.max_deliveries is not None and row.deliveries > self.max_deliveries:
                    expired.append(row)
                    continue
                job = _decode_job(row)
                if job is None:
                    corrupt.append(row.id)
                elif (job.concurrency_key is not None
                      and not self._take_slot(conn, job, lease, token, full)):
                    given_back.append({"row": row.id, "token": token, "old_at": row.old_at,
                                       "old_token": row.old_token})
                else:
                    claimed.append(replace(job, delivery=row.deliveries))
            if given_back:
                conn.execute(q.unclaim, given_back)
            for row in expired:
                conn.execute(q.give_up, {"row": row.id, "n": row.deliveries - 1,
                                         "res": _lease_expired(row, row.deliveries - 1)})
            if corrupt:
                conn.execute(q.delete_ids, {"ids": corrupt})
            # Jobs held back by full keys may hide claimable ones behind them.
            room = None if limit is None else limit - before - len(claimed)
            if given_back and page_full and room:
                claimed += self._claim_select(conn, room, lease, token, full)
            return claimed

        hot = self._hot_take[limit is not None]

        def one(conn: Connection) -> list[DispatchJob]:
            rows = hot.rows(conn, params)
            return settle(conn, _in_queue_order(rows), 0, len(rows) == limit)

        if not apart:
            return self._db.run(one, what="claim jobs")
        rows = _in_queue_order(self._db.run(lambda conn: hot.rows(conn, params),
                                            standalone=True, what="claim jobs"))
        claimed: list[DispatchJob] = []
        rest = []
        for row in rows:
            over = self.max_deliveries is not None and row.deliveries > self.max_deliveries
            job = None if over else _plain_job(row)
            if job is None:
                rest.append(row)
            else:
                claimed.append(replace(job, delivery=row.deliveries))
        if not rest:
            return claimed
        try:
            claimed += self._db.run(lambda conn: settle(conn, rest, len(claimed),
                                                        len(rows) == limit), what="claim jobs")
        except Exception as exc:
            logger.warning("claimed %d job(s) but could not give them slots or give them "
                           "back (%s); they return to the queue when their lease ends",
                           len(rest), exc)
        return claimed

    def _claim_select(self, conn: Connection, limit: int | None, lease: float, token: int,
                      full: set[tuple[str, int]]) -> list[DispatchJob]:
        """A claim as ``SELECT ... FOR UPDATE SKIP LOCKED`` and one ``UPDATE``.

        ``full``: keys already found without a free slot. When full keys held
        jobs back, further rows are read in pages of ``_PAGE`` to fill ``limit``.
        """
        q = self._q
        claimed: list[DispatchJob] = []
        ids, expired, corrupt = [], [], []
        page, after = limit, None
        while True:
            if after is not None:
                rows = conn.execute(q.claim_more, {"limit": page, "after_at": after[0],
                                                   "after": after[1]}).all()
            elif page is None:
                rows = conn.execute(q.claim_all).all()
            else:
                rows = conn.execute(q.claim_some, {"limit": page}).all()
            skipped = False
            for row in rows:
                if limit is not None and len(claimed) >= limit:
                    break
                if (self.max_deliveries is not None
                        and row.deliveries >= self.max_deliveries):
                    expired.append(row)
                    continue
                job = _decode_job(row)
                if job is None:
                    corrupt.append(row.id)
                elif (job.concurrency_key is not None
                      and not self._take_slot(conn, job, lease, token, full)):
                    skipped = True  # its key is full: it stays queued
                else:
                    claimed.append(replace(job, delivery=row.deliveries + 1))
                    ids.append(row.id)
            # Read on only when full keys held jobs back and more rows may wait.
            if (page is None or not skipped or len(rows) < page
                    or len(claimed) >= (limit or 0)):
                break
            page, after = _PAGE, (rows[-1].visible_at, rows[-1].id)
        if ids:
            conn.execute(q.mark_claimed, {"ids": ids, "lease": lease, "token": token})
        for row in expired:
            conn.execute(q.give_up, {"row": row.id, "n": row.deliveries,
                                     "res": _lease_expired(row, row.deliveries)})
        if corrupt:
            conn.execute(q.delete_ids, {"ids": corrupt})
        return claimed

    def _take_slot(self, conn: Connection, job: DispatchJob, lease: float, token: int,
                   full: set[tuple[str, int]]) -> bool:
        """Give ``job`` a free slot of its key inside the claim transaction.

        ``SKIP LOCKED`` never waits for a slot another claim is taking, so slot
        rows add no lock waits (and no deadlocks) to a claim."""
        assert job.concurrency_key is not None
        which = (job.concurrency_key, job.concurrency_limit or 1)
        if which in full:
            return False
        no = conn.execute(self._q.free_slot, {"key": which[0], "limit": which[1]}).scalar()
        if no is None:
            full.add(which)
            return False
        conn.execute(self._q.take_slot, {"key": which[0], "no": no, **_job_params(job),
                                         "token": token, "lease": lease})
        return True

    # -- leases ---------------------------------------------------------------------

    def heartbeat(self, job: DispatchJob, lease: float) -> bool:
        """Extend the lease; ``False`` once the job has a result or another claim.

        A job this runner did not claim (another process's runner) is extended
        only while its current lease is still running.
        """
        with self._held_lock:
            token = self._held.get(job.key)
        params = {**_job_params(job), "lease": lease, "token": token}
        query = self._q.extend_any if token is None else self._q.extend_mine
        slot_query = self._q.extend_slot_any if token is None else self._q.extend_slot_mine

        def work(conn: Connection) -> bool:
            if not conn.execute(query, params).rowcount:
                return False
            # A job that lost its slot (its lease ran out and another job took
            # it) has lost its claim too: running on would exceed the limit.
            return (job.concurrency_key is None
                    or bool(conn.execute(slot_query, params).rowcount))

        extended = self._db.run(work, standalone=job.concurrency_key is None,
                                what=f"extend the lease of {job.key}")
        if not extended:
            self._forget(job)
        return extended

    def release(self, job: DispatchJob) -> None:
        token = self._forget(job)
        params = {**_job_params(job), "token": token}
        query = self._q.release_any if token is None else self._q.release_mine

        def work(conn: Connection) -> bool:
            if not conn.execute(query, params).rowcount:
                return False
            if job.concurrency_key is not None:
                conn.execute(self._q.free_slots, params)
            if self._notify is not None:
                conn.execute(self._notify)
            return True

        if self._db.run(work, standalone=job.concurrency_key is None, what=f"release {job.key}"):
            self.jobs_queued()

    def ack(self, job: DispatchJob, output: dict[str, Any]) -> None:
        """Mark the job's row acknowledged: its result is already applied, none is stored.

        The row stays as a tombstone for ``ACKED_TTL`` seconds, so a stale
        re-dispatch cannot queue the job again and run it a second time.
        """
        self._forget(job)
        params = _job_params(job)

        def work(conn: Connection) -> None:
            self._hot_ack.execute(conn, params)
            if job.concurrency_key is not None:
                conn.execute(self._q.free_slots, params)

        self._db.run(work, standalone=job.concurrency_key is None,
                     what=f"acknowledge {job.key}")
        self._acked(1)

    def ack_many(self, acks: Sequence[tuple[DispatchJob, dict[str, Any]]]) -> None:
        """``Runner.ack_many``: the jobs without a concurrency key in one statement
        (an ``executemany``), the others one by one, as ``ack`` does them."""
        plain = [job for job, _ in acks if job.concurrency_key is None]
        if len(plain) < 2:
            super().ack_many(acks)
            return
        for job in plain:
            self._forget(job)
        params = [_job_params(job) for job in plain]
        self._db.run(lambda conn: self._hot_ack.execute(conn, params), standalone=True,
                     what=f"acknowledge {len(plain)} jobs")
        self._acked(len(plain))
        for job, output in acks:
            if job.concurrency_key is not None:
                self.ack(job, output)

    def _acked(self, count: int) -> None:
        """Count acknowledgements; every ``PURGE_EVERY``, purge the old tombstones."""
        before, self._acks = self._acks, self._acks + count
        if before // PURGE_EVERY != self._acks // PURGE_EVERY:
            self._db.run(lambda conn: conn.execute(self._q.purge_acked, {"ttl": ACKED_TTL}),
                         standalone=True, what="purge acknowledged jobs")

    def _forget(self, job: DispatchJob) -> int | None:
        return self._forget_key(job.key)

    def _forget_key(self, key: str) -> int | None:
        with self._held_lock:
            self._slotted.discard(key)
            return self._held.pop(key, None)

    def _may_hold_slot(self, key: str) -> bool:
        """False only for a job this runner claimed without a slot: any other may
        hold one (another process claimed it), so its result frees slots."""
        with self._held_lock:
            return key in self._slotted or key not in self._held

    # -- results --------------------------------------------------------------------

    def submit_work_result(
        self,
        workflow_execution_id: str,
        step_id: str,
        output: dict[str, Any],
        run_id: int | None = None,
    ) -> bool:
        try:
            result = dumps(self.payloads.pack_output(output))
        except (TypeError, ValueError) as exc:
            # Only JSON can be stored; the graph counts this as a failed attempt.
            result = dumps(error_output("InvalidOutput", f"the output is not JSON: {exc}"))
        q = self._q
        params: dict[str, Any] = {"wf": workflow_execution_id, "step": step_id, "run": run_id,
                                  "res": result}
        what = f"record the result of {job_key(workflow_execution_id, step_id, run_id or 0)}"
        if run_id is not None:
            key = job_key(workflow_execution_id, step_id, run_id)
            free = self._may_hold_slot(key)
            self._forget_key(key)

            def finish(conn: Connection) -> int:
                done = conn.execute(q.finish, params).rowcount
                if done and free:
                    conn.execute(q.free_slots, params)
                return done

            # The usual case, a result for a queued job, is one statement (two
            # when the job may hold a concurrency slot).
            if self._db.run(finish, standalone=not free, what=what):
                return True

        def work(conn: Connection) -> bool:
            if params["run"] is None:  # the seed's form: the job this step has queued
                params["run"] = conn.execute(q.queued_run, params).scalar()
            if params["run"] is not None:
                if conn.execute(q.finish, params).rowcount:
                    conn.execute(q.free_slots, params)
                    return True
                if conn.execute(q.job_known, params).scalar():
                    return False
            elif conn.execute(q.result_waiting, params).scalar():
                return False
            # A result for a job this runner no longer (or never) knew: keep it;
            # the graph ignores it if the step has moved on.
            conn.execute(q.insert_result, {
                "workflow_execution_id": workflow_execution_id, "step_id": step_id,
                "run_id": UNKNOWN_RUN if params["run"] is None else params["run"],
                "state": DONE, "deliveries": 0, "payload": "{}", "result": result,
                "visible_at": None, "created_at": time.time()})
            return True  # a racing twin insert makes the transaction a DuplicateRow

        try:
            return self._db.run(work, what=what, duplicate_ok=True)
        except DuplicateRow:
            return False  # another submitter recorded the same job just now

    def gather(self, workflow_execution_id: str) -> list[WorkResult]:
        q = self._q
        what = f"gather results of {workflow_execution_id!r}"
        if self._db.engine.dialect.delete_returning:  # one atomic statement
            taken = self._db.run(
                lambda conn: conn.execute(q.take_results, {"wf": workflow_execution_id}).all(),
                standalone=True, what=what)
            rows = sorted(taken, key=lambda r: r.id)
        else:
            def work(conn: Connection) -> Sequence[Any]:
                rows = conn.execute(q.results, {"wf": workflow_execution_id}).all()
                if rows:
                    conn.execute(q.delete_ids, {"ids": [r.id for r in rows]})
                return rows

            rows = list(self._db.run(work, what=what))
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
            try:
                output = self.payloads.unpack_output(output)
            except PayloadMissing as exc:  # the attempt fails, naming the blob
                logger.error("result of job %s: %s", job_key(workflow_execution_id,
                                                             row.step_id, row.run_id), exc)
                output = error_output("PayloadMissing",
                                      f"the output of step {row.step_id!r}: {exc}")
            # Fresh from the decoder (or the offloader's cache): the graph checks
            # it without a deep copy, and the values stay the offloader's own.
            results.append(WorkResult(row.step_id, decoded(output), run))
        return results

    def cancel(self, workflow_execution_id: str) -> None:
        self._db.run(lambda conn: conn.execute(self._q.cancel, {"wf": workflow_execution_id}),
                     standalone=True, what=f"cancel jobs of {workflow_execution_id!r}")


    # -- inspection -------------------------------------------------------------------

    def job_states(self, workflow_execution_id: str) -> dict[str, JobState]:
        """From the execution's task rows: a queued row whose lease runs is ``running``
        until ``visible_at`` (the database clock); one whose lease ran out is
        ``queued`` again with its ``deliveries``."""
        rows = self._db.run(lambda conn: conn.execute(self._q.states,
                                                      {"wf": workflow_execution_id}).all(),
                            write=False, standalone=True,
                            what=f"read the jobs of {workflow_execution_id!r}")
        found = {}
        for row in rows:
            key = job_key(workflow_execution_id, row.step_id, row.run_id)
            if row.state == QUEUED and row.held:
                found[key] = JobState(RUNNING, row.deliveries, row.visible_at)
            else:
                found[key] = JobState(row.state, row.deliveries)
        return found

    def queue_depth(self) -> int:
        """One ``COUNT(*)`` over the claim index."""
        return int(self._db.run(lambda conn: conn.execute(self._q.depth).scalar() or 0,
                                write=False, standalone=True, what="count queued jobs"))


def _job_params(job: DispatchJob) -> dict[str, Any]:
    return {"wf": job.workflow_execution_id, "step": job.step_id, "run": job.run_id}


def _in_queue_order(rows: Sequence[Any]) -> list[Any]:
    """Rows an ``UPDATE ... RETURNING`` claimed (which returns them in no set
    order), in the order the queue had them."""
    return sorted(rows, key=lambda row: (row.old_at, row.id))


def _plain_job(row: Any) -> DispatchJob | None:
    """The job of a claimed row if it decodes and has no concurrency key, else
    ``None`` (the caller checks ``max_deliveries``)."""
    try:
        job = DispatchJob.from_dict(json.loads(row.payload))
    except (TypeError, ValueError):
        return None
    if job.concurrency_key is not None or (job.workflow_execution_id, job.step_id,
                                           job.run_id) != (row.workflow_execution_id,
                                                           row.step_id, row.run_id):
        return None
    return job


def _lease_expired(row: Any, deliveries: int) -> str:
    key = job_key(row.workflow_execution_id, row.step_id, row.run_id)
    logger.warning("job %s: delivered %d times and no result or WorkerLost report came back "
                   "before any of its leases ran out; recording an error result instead of "
                   "delivering it again", key, deliveries)
    return dumps(error_output(
        "LeaseExpired", f"job {key} was delivered {deliveries} times (max_deliveries) and "
                        "every lease ran out with nothing reported: the workers that took it "
                        "died, hung or could not reach the backend"))


def _decode_job(row: Any) -> DispatchJob | None:
    """The job a row holds, or ``None`` (logged with its key) if it cannot be decoded."""
    try:
        job = DispatchJob.from_dict(json.loads(row.payload))
    except (TypeError, ValueError) as exc:
        reason = str(exc)
    else:
        if (job.workflow_execution_id, job.step_id, job.run_id) == (
                row.workflow_execution_id, row.step_id, row.run_id):
            return job
        reason = f"the payload describes job {job.key}"
    logger.warning("corrupt job row %s skipped: %s",
                   job_key(row.workflow_execution_id, row.step_id, row.run_id), reason)
    return None
