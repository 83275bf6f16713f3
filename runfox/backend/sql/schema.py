"""The runfox tables, creating them on first use, and checking their schema version.

Eight tables, named ``runfox_*`` so they can share a database with an application,
plus Alembic's ``runfox_alembic_version`` (see ``migrations``):

- ``runfox_schema``: one row per schema version applied. Every runfox reads
  the highest version, so even a release from before migrations refuses a
  database newer than it knows rather than misreading it.
- ``runfox_workflows``: one header row per execution. The spec and the inputs
  are written once, at creation; a transition rewrites only ``status``,
  ``version``, ``updated_at``, ``outcome`` (when it changed), ``due_at`` and
  ``retry_at``. ``state`` holds the state of records written before schema 9.
  ``parent`` (schema 7, nullable JSON) names a sub-workflow's parent step run;
  written once, at creation.
- ``runfox_steps``: one row per step of an execution. A transition rewrites
  only the steps it changed; ``version`` is the record version that last wrote
  the row, which lets a reader that has version *n* fetch only newer rows.
- ``runfox_tasks``: the job queue. One row per job ``(workflow_execution_id,
  step_id, run_id)``; a job is claimable while ``state = 'queued'`` and
  ``visible_at`` has passed. A claim moves ``visible_at`` to the end of the
  lease and stamps a random ``claim_token`` that heartbeats and releases must
  match; a result turns the row ``done``, and ``gather`` deletes it.
- ``runfox_keys`` (schema 2): idempotency keys, one row per key naming the
  execution created with it, inserted in the same transaction as that
  execution's header row; the primary key makes the second creator fail.
- ``runfox_schedules`` (schema 2): one row per schedule. ``due_at`` (the next
  fire time, 0 while fires are pending, NULL when paused) is indexed so a tick
  finds due schedules in one query; ``version`` is the compare-and-set counter;
  ``spec`` and ``data`` (everything else) are JSON.
- ``runfox_slots`` (schema 3): concurrency slots. One row per ``(slot_key, slot_no)``,
  ``slot_no`` in ``0..limit-1``, created when a job with that key is dispatched
  and never deleted; a row is held while it names a job and its ``lease_end``
  (database clock) has not passed. The primary key is what bounds a key to
  ``limit`` running jobs (see ``SqlRunner``).
- ``runfox_history`` (schema 4): execution history (``runfox.history``), one row
  per event, keyed by ``(workflow_execution_id, version, idx)`` (the record
  version whose write made it, and its place within that write), inserted in
  the same transaction as that write. ``type``, ``step_id``, ``run_id`` and
  ``time`` are copies of what ``data`` (the event's JSON) holds, for queries.
- ``runfox_workers`` (schema 6): live workers (``runfox.backend.workers``), one row
  per worker: ``heartbeat_at`` (the worker's clock) and ``data`` (JSON: host, pid,
  executor, concurrency, started, interval, lease, held jobs). Rewritten every
  heartbeat interval, deleted on a clean stop; a killed worker's row stays until
  pruned.
- ``runfox_state`` (schema 9): the shared state, one row per key with the record
  version that last wrote it (``value`` NULL: removed), so a transition writes
  only the keys whose value changed and a reader fetches only newer rows.
  Records written before schema 9 keep their state in ``runfox_workflows.state``;
  rows override it. ``runfox_workflows`` gained ``due_at`` and ``retry_at``
  (schema 9), each indexed: the sweep reads only executions due now
  (``Store.due``).
- ``runfox_cache`` (schema 5): the step cache, one row per key (sha256 hex of fn,
  inputs and cache version, see ``runfox.cache``) with ``fn``, ``version`` (JSON),
  ``stored_at`` and ``output`` (JSON); ``fn`` is indexed for ``clear --fn``.
- ``runfox_payloads`` (schema 8): offloaded values (``runfox.payloads``), one row
  per blob keyed by its content (``sha256:<hex>``), with ``size`` and ``data``
  (the value's JSON, ASCII-escaped like every JSON column; PyMySQL sends a
  binary parameter at twice its size, so text reaches further under MariaDB's
  ``max_allowed_packet``). Rows are immutable.
- schema 10: the claim index of ``runfox_tasks`` is ``(state, visible_at, id)``
  (``ix_runfox_tasks_queue``), the order claims take jobs in.
- schema 11: no table changes. Large step outputs (and result outputs in
  ``runfox_tasks.result``) are objects whose large top-level values are
  references (``runfox.payloads.pack_object``); the version keeps an older
  runfox, which would read those references as values, away.
- schema 12: no table changes. A new execution stores no ``runfox_steps`` row
  for a step still in its initial state (ready, run 0, no attempt): a missing
  row reads as that step, and the write that first changes it inserts the row
  (an upsert). The version keeps an older runfox, whose plain ``UPDATE`` would
  change nothing there, away.

JSON is stored as text (``LONGTEXT`` on MySQL), ASCII-escaped so any server
character set holds it. Keys compare case-sensitively on MySQL (``utf8mb4_bin``)
because step ids do. ``backends/sql/*.sql`` holds the same tables as
hand-written DDL for teams that manage schemas themselves.

Opening a database (``ensure_schema``) creates the tables in an empty one by
running the migrations, accepts one at this release's head revision, and refuses
any other, naming the fix: ``runfox db upgrade`` for an older schema
(``upgrade_schema``), a newer runfox for a newer one. Upgrades are never run
implicitly, so a fleet of workers on the previous release is not changed under
its feet by one new process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    select,
    text,
)
from sqlalchemy.dialects.mysql import LONGTEXT
from sqlalchemy.engine import Connection

from .dialects import Dialect
from .migrations import VERSION_TABLE, revision_name, upgrade

__all__ = [
    "HEAD_REVISION",
    "SCHEMA_VERSION",
    "SchemaError",
    "SchemaOutdated",
    "SchemaState",
    "cache",
    "ensure_schema",
    "history",
    "keys",
    "metadata",
    "payloads",
    "read_state",
    "schedules",
    "schema_version",
    "slots",
    "state",
    "steps",
    "tasks",
    "upgrade_schema",
    "workers",
    "workflows",
]

#: The layout these tables have; bump it with a new revision in ``migrations``.
SCHEMA_VERSION = 12

_MYSQL: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4",
                          "mysql_collate": "utf8mb4_bin"}

JsonText = Text().with_variant(LONGTEXT(), "mysql", "mariadb")
ExecutionKey = String(200)  # {md5}#{timestamp}-{16 hex}: about 75 characters
StepId = String(255)

metadata = MetaData()

schema_version = Table(
    "runfox_schema", metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", Double, nullable=False),
    **_MYSQL,
)

workflows = Table(
    "runfox_workflows", metadata,
    Column("workflow_execution_id", ExecutionKey, primary_key=True),
    Column("workflow_id", String(64), nullable=False),
    Column("execution_id", String(100), nullable=False),
    Column("name", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("spec", JsonText, nullable=False),
    Column("inputs", JsonText, nullable=False),
    Column("state", JsonText, nullable=False),
    Column("outcome", JsonText, nullable=False),
    # schema 7: a sub-workflow's parent step (JSON, written once); NULL otherwise
    Column("parent", JsonText, nullable=True),
    # Schema 9: when the sweep should next look at the execution (NULL: nothing
    # can fall due by time alone) and its earliest waiting retry.
    Column("due_at", Double, nullable=True),
    Column("retry_at", Double, nullable=True),
    Index("ix_runfox_workflows_created", "created_at"),
    Index("ix_runfox_workflows_status", "status", "created_at"),
    Index("ix_runfox_workflows_due", "due_at"),
    Index("ix_runfox_workflows_retry", "retry_at"),
    **_MYSQL,
)

steps = Table(
    "runfox_steps", metadata,
    Column("workflow_execution_id", ExecutionKey, primary_key=True),
    Column("step_id", StepId, primary_key=True),
    Column("status", String(16), nullable=False),
    Column("run_id", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Column("data", JsonText, nullable=False),
    Index("ix_runfox_steps_version", "workflow_execution_id", "version"),
    **_MYSQL,
)

tasks = Table(
    "runfox_tasks", metadata,
    # A surrogate id keeps claims first-in first-out and their UPDATEs cheap.
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("workflow_execution_id", ExecutionKey, nullable=False),
    Column("step_id", StepId, nullable=False),
    Column("run_id", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("visible_at", Double, nullable=True),
    Column("deliveries", Integer, nullable=False),
    Column("claim_token", BigInteger, nullable=True),
    Column("payload", JsonText, nullable=False),
    Column("result", JsonText, nullable=True),
    Column("created_at", Double, nullable=False),
    UniqueConstraint("workflow_execution_id", "step_id", "run_id", name="uq_runfox_tasks_job"),
    # Claims read ``state = 'queued' AND visible_at <= now ORDER BY visible_at, id``
    # straight off this index (schema 10): no sort over the queue, whatever its size.
    Index("ix_runfox_tasks_queue", "state", "visible_at", "id"),
    **_MYSQL,
)

state = Table(
    "runfox_state", metadata,
    Column("workflow_execution_id", ExecutionKey, primary_key=True),
    Column("name", StepId, primary_key=True),
    Column("version", Integer, nullable=False),
    # JSON; NULL once the key was removed from the state (a tombstone, so a
    # reader holding an older version learns of the removal).
    Column("value", JsonText, nullable=True),
    Index("ix_runfox_state_version", "workflow_execution_id", "version"),
    **_MYSQL,
)

keys = Table(
    "runfox_keys", metadata,
    Column("idempotency_key", String(255), primary_key=True),
    Column("workflow_execution_id", ExecutionKey, nullable=False),
    Column("created_at", Double, nullable=False),
    **_MYSQL,
)

schedules = Table(
    "runfox_schedules", metadata,
    Column("name", String(100), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("due_at", Double, nullable=True),
    Column("spec", JsonText, nullable=False),
    Column("data", JsonText, nullable=False),
    Index("ix_runfox_schedules_due", "due_at"),
    **_MYSQL,
)

slots = Table(
    "runfox_slots", metadata,
    Column("slot_key", String(255), primary_key=True),
    Column("slot_no", Integer, primary_key=True, autoincrement=False),
    # The holding job (all null while free) and the claim that took the slot.
    Column("workflow_execution_id", ExecutionKey, nullable=True),
    Column("step_id", StepId, nullable=True),
    Column("run_id", Integer, nullable=True),
    Column("claim_token", BigInteger, nullable=True),
    Column("lease_end", Double, nullable=True),
    Index("ix_runfox_slots_holder", "workflow_execution_id", "step_id", "run_id"),
    **_MYSQL,
)

history = Table(
    "runfox_history", metadata,
    Column("workflow_execution_id", ExecutionKey, primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("idx", Integer, primary_key=True, autoincrement=False),
    Column("time", Double, nullable=False),
    Column("type", String(32), nullable=False),
    Column("step_id", StepId, nullable=True),
    Column("run_id", Integer, nullable=True),
    Column("data", JsonText, nullable=False),
    **_MYSQL,
)

workers = Table(
    "runfox_workers", metadata,
    Column("worker_id", String(255), primary_key=True),
    Column("heartbeat_at", Double, nullable=False),
    Column("data", JsonText, nullable=False),
    **_MYSQL,
)

cache = Table(
    "runfox_cache", metadata,
    Column("cache_key", String(64), primary_key=True),
    Column("fn", String(255), nullable=False),
    Column("version", Text, nullable=False),
    Column("stored_at", Double, nullable=False),
    Column("output", JsonText, nullable=False),
    Index("ix_runfox_cache_fn", "fn"),
    **_MYSQL,
)

payloads = Table(
    "runfox_payloads", metadata,
    Column("payload_key", String(71), primary_key=True),  # sha256:<64 hex>
    Column("size", BigInteger, nullable=False),
    Column("data", JsonText, nullable=False),
    Column("created_at", Double, nullable=False),
    **_MYSQL,
)


class SchemaError(Exception):
    """The database holds no runfox schema, or one this release cannot use."""


class SchemaOutdated(SchemaError):
    """The database has an older runfox schema: ``runfox db upgrade`` brings it up."""


@dataclass(frozen=True)
class SchemaState:
    """What a database holds, as ``read_state`` finds it.

    ``version``: the highest row of ``runfox_schema`` (``None``: no table or no
    row). ``revision``: the Alembic revision in ``runfox_alembic_version``
    (``None``: a database made before migrations, or none at all). ``tables``:
    the runfox tables present.
    """

    version: int | None
    revision: str | None
    tables: frozenset[str]

    @property
    def empty(self) -> bool:
        """No runfox table at all: a database to create."""
        return not self.tables

    @property
    def at_head(self) -> bool:
        """The schema this runfox uses."""
        return self.revision == HEAD_REVISION and not self.newer

    @property
    def newer(self) -> bool:
        """Written by a newer runfox: a revision or version this one does not know."""
        return ((self.revision is not None and self.revision not in KNOWN_REVISIONS)
                or (self.version is not None and self.version > SCHEMA_VERSION))

    def describe(self) -> str:
        """``schema 1 (revision 0001)``, ``schema 1 (no migration record ...)``, or
        ``no runfox tables``."""
        if self.empty:
            return "no runfox tables"
        number = "incomplete schema" if self.version is None else f"schema {self.version}"
        if self.revision is None:
            return f"{number} (no migration record: made before runfox used migrations)"
        return f"{number} (revision {self.revision})"


#: The Alembic revision of SCHEMA_VERSION, and every revision this release knows
#: (revision NNNN makes schema NNNN; see ``migrations``).
HEAD_REVISION = revision_name(SCHEMA_VERSION)
KNOWN_REVISIONS = frozenset(revision_name(v) for v in range(1, SCHEMA_VERSION + 1))
_TABLES = (*(t.name for t in metadata.sorted_tables), VERSION_TABLE)


def read_state(conn: Connection) -> SchemaState:
    """The runfox tables, schema version and revision ``conn``'s database holds."""
    present = frozenset(name for name in _TABLES if conn.dialect.has_table(conn, name))
    version = None
    if schema_version.name in present:
        found = conn.execute(select(func.max(schema_version.c.version))).scalar()
        version = None if found is None else int(found)
    revision = None
    if VERSION_TABLE in present:
        rows = [r[0] for r in conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))]
        revision = max(rows) if rows else None
    return SchemaState(version, revision, present)


def ensure_schema(conn: Connection, dialect: Dialect, create: bool, url: str) -> SchemaState:
    """Create the tables in an empty database (when ``create``) and check the schema.

    Runs under the dialect's schema lock, so processes starting together do not
    race to create the same table. A database at another schema is left alone:
    an older one is upgraded by ``runfox db upgrade`` (``upgrade_schema``), not
    behind the back of workers still running the previous release. ``url`` (its
    password masked) goes into the command the error suggests.

    Raises:
        SchemaOutdated: the schema is older than this runfox's (or incomplete
            and ``create`` is false).
        SchemaError: the tables are missing and ``create`` is false, or the
            database was written by a newer runfox.
    """
    with dialect.schema_lock(conn):
        state = read_state(conn)
        if state.empty:
            if not create:
                raise SchemaError("no runfox tables (runfox_schema is missing); create them "
                                  f"with `runfox db upgrade --backend {url}` or "
                                  "backends/sql/*.sql, or let runfox create them "
                                  "(create_tables=True)")
            _migrate(conn)
            return read_state(conn)
        if state.at_head:
            return state
        if create and state.version is None and state.revision is None:
            _migrate(conn)  # a creation cut short (MySQL DDL commits as it goes)
            return read_state(conn)
        raise schema_mismatch(state, url)


def schema_mismatch(state: SchemaState, url: str) -> SchemaError:
    """The error for a database at ``state`` that this runfox cannot use as it is."""
    if state.newer:
        return SchemaError(f"the database has {state.describe()}, newer than this runfox "
                           f"understands (schema {SCHEMA_VERSION}); it was "
                           "upgraded by a newer runfox: install that release "
                           "(pip install -U runfox)")
    command = f"`runfox db upgrade --backend {url}`"
    if state.revision is None and state.version == SCHEMA_VERSION:
        return SchemaOutdated(f"the database has {state.describe()}; this runfox needs "
                              f"it recorded: run {command} once (it adds the version "
                              "table and changes nothing else)")
    return SchemaOutdated(f"the database has {state.describe()}; this runfox needs "
                          f"schema {SCHEMA_VERSION}: back it up, stop its workers, then run "
                          f"{command}")


def upgrade_schema(conn: Connection, dialect: Dialect, url: str
                   ) -> tuple[SchemaState, SchemaState]:
    """Bring the database to this runfox's schema; returns the states before and after.

    An empty database gets every table; one made before migrations (schema 1,
    no revision) gains the version table; a newer one is refused.

    Raises:
        SchemaError: the database is newer than this runfox.
    """
    with dialect.schema_lock(conn):
        before = read_state(conn)
        if before.newer:
            raise schema_mismatch(before, url)
        if not before.at_head:
            _migrate(conn)
        return before, read_state(conn)


def _migrate(conn: Connection) -> None:
    """Run the migrations to the head in ``conn``'s transaction."""
    try:
        upgrade(conn)
    except ModuleNotFoundError as exc:
        if exc.name != "alembic":
            raise
        raise SchemaError("creating or upgrading runfox tables needs Alembic: "
                          "pip install 'runfox[sql]'") from exc
