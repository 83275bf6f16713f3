-- runfox schema version 12 (revision 0012) for SQLite (runfox.backend.sql).
-- runfox creates these tables itself on first use; this file is for teams that
-- create the database file by other means (then open it with create_tables=False).
-- tests/test_sql_ddl.py checks that it matches what runfox creates.
-- A later runfox upgrades a database made from it with `runfox db upgrade`.
-- runfox switches the file to WAL mode (PRAGMA journal_mode = WAL) when it opens it.

BEGIN;

CREATE TABLE runfox_schema (
    version     INTEGER NOT NULL,
    applied_at  DOUBLE  NOT NULL,
    PRIMARY KEY (version)
);

-- One header row per execution. spec and inputs are written once, at creation.
CREATE TABLE runfox_workflows (
    workflow_execution_id VARCHAR(200) NOT NULL,
    workflow_id           VARCHAR(64)  NOT NULL,
    execution_id          VARCHAR(100) NOT NULL,
    name                  VARCHAR(255) NOT NULL,
    status                VARCHAR(16)  NOT NULL,
    version               INTEGER      NOT NULL,
    created_at            DOUBLE       NOT NULL,
    updated_at            DOUBLE       NOT NULL,
    spec                  TEXT         NOT NULL,
    inputs                TEXT         NOT NULL,
    state                 TEXT         NOT NULL,
    outcome               TEXT         NOT NULL,
    parent                TEXT         NULL,
    due_at                DOUBLE       NULL,
    retry_at              DOUBLE       NULL,
    PRIMARY KEY (workflow_execution_id)
);
CREATE INDEX ix_runfox_workflows_created ON runfox_workflows (created_at);
CREATE INDEX ix_runfox_workflows_status ON runfox_workflows (status, created_at);
-- Schema 9: when the sweep should next look at a running execution, and its
-- earliest waiting retry (both NULL once it has finished).
CREATE INDEX ix_runfox_workflows_due ON runfox_workflows (due_at);
CREATE INDEX ix_runfox_workflows_retry ON runfox_workflows (retry_at);

-- One row per step; version is the record version that last wrote the row.
CREATE TABLE runfox_steps (
    workflow_execution_id VARCHAR(200) NOT NULL,
    step_id               VARCHAR(255) NOT NULL,
    status                VARCHAR(16)  NOT NULL,
    run_id                INTEGER      NOT NULL,
    version               INTEGER      NOT NULL,
    data                  TEXT         NOT NULL,
    PRIMARY KEY (workflow_execution_id, step_id)
);
CREATE INDEX ix_runfox_steps_version ON runfox_steps (workflow_execution_id, version);

-- The job queue: claimable while state = 'queued' and visible_at has passed.
-- id is an INTEGER PRIMARY KEY, so it is the rowid.
CREATE TABLE runfox_tasks (
    id                    INTEGER      NOT NULL,
    workflow_execution_id VARCHAR(200) NOT NULL,
    step_id               VARCHAR(255) NOT NULL,
    run_id                INTEGER      NOT NULL,
    state                 VARCHAR(16)  NOT NULL,
    visible_at            DOUBLE,
    deliveries            INTEGER      NOT NULL,
    claim_token           BIGINT,
    payload               TEXT         NOT NULL,
    result                TEXT,
    created_at            DOUBLE       NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT uq_runfox_tasks_job UNIQUE (workflow_execution_id, step_id, run_id)
);
CREATE INDEX ix_runfox_tasks_queue ON runfox_tasks (state, visible_at, id);

-- Idempotency keys: one row per key, written with the execution it created.
-- The shared state, one row per key (schema 9); value NULL: the key was removed.
CREATE TABLE runfox_state (
    workflow_execution_id VARCHAR(200) NOT NULL,
    name                  VARCHAR(255) NOT NULL,
    version               INTEGER      NOT NULL,
    value                 TEXT,
    PRIMARY KEY (workflow_execution_id, name)
);
CREATE INDEX ix_runfox_state_version ON runfox_state (workflow_execution_id, version);

CREATE TABLE runfox_keys (
    idempotency_key       VARCHAR(255) NOT NULL,
    workflow_execution_id VARCHAR(200) NOT NULL,
    created_at            DOUBLE NOT NULL,
    PRIMARY KEY (idempotency_key)
);

-- Schedules: due_at is the next fire time (0 while fires are pending, NULL when paused).
CREATE TABLE runfox_schedules (
    name    VARCHAR(100) NOT NULL,
    version INTEGER      NOT NULL,
    due_at  DOUBLE,
    spec    TEXT NOT NULL,
    data    TEXT NOT NULL,
    PRIMARY KEY (name)
);
CREATE INDEX ix_runfox_schedules_due ON runfox_schedules (due_at);

-- Concurrency slots: rows 0..limit-1 per key; held while they name a job whose
-- lease_end has not passed.
CREATE TABLE runfox_slots (
    slot_key              VARCHAR(255) NOT NULL,
    slot_no               INTEGER      NOT NULL,
    workflow_execution_id VARCHAR(200),
    step_id               VARCHAR(255),
    run_id                INTEGER,
    claim_token           BIGINT,
    lease_end             DOUBLE,
    PRIMARY KEY (slot_key, slot_no)
);
CREATE INDEX ix_runfox_slots_holder ON runfox_slots (workflow_execution_id, step_id, run_id);

-- Execution history: one row per event, written with the record version that made it.
CREATE TABLE runfox_history (
    workflow_execution_id VARCHAR(200) NOT NULL,
    version               INTEGER      NOT NULL,
    idx                   INTEGER      NOT NULL,
    time                  DOUBLE NOT NULL,
    type                  VARCHAR(32)  NOT NULL,
    step_id               VARCHAR(255),
    run_id                INTEGER,
    data                  TEXT NOT NULL,
    PRIMARY KEY (workflow_execution_id, version, idx)
);

-- Live workers: one row per worker, rewritten every heartbeat interval, deleted on
-- a clean stop (runfox.backend.workers).
CREATE TABLE runfox_workers (
    worker_id             VARCHAR(255) NOT NULL,
    heartbeat_at          DOUBLE       NOT NULL,
    data                  TEXT NOT NULL,
    PRIMARY KEY (worker_id)
);

-- The step cache: one row per key (sha256 hex of fn, inputs and cache version).
CREATE TABLE runfox_cache (
    cache_key             VARCHAR(64)  NOT NULL,
    fn                    VARCHAR(255) NOT NULL,
    version               TEXT         NOT NULL,
    stored_at             DOUBLE NOT NULL,
    output                TEXT NOT NULL,
    PRIMARY KEY (cache_key)
);
CREATE INDEX ix_runfox_cache_fn ON runfox_cache (fn);

-- Offloaded payloads: one row per blob, keyed by its content (sha256:<hex>).
CREATE TABLE runfox_payloads (
    payload_key           VARCHAR(71)  NOT NULL,
    size                  BIGINT       NOT NULL,
    data                  TEXT NOT NULL,
    created_at            DOUBLE NOT NULL,
    PRIMARY KEY (payload_key)
);

INSERT INTO runfox_schema (version, applied_at) VALUES (1, (julianday('now') - 2440587.5) * 86400.0);
INSERT INTO runfox_schema (version, applied_at) VALUES (2, (julianday('now') - 2440587.5) * 86400.0);
INSERT INTO runfox_schema (version, applied_at) VALUES (3, (julianday('now') - 2440587.5) * 86400.0);
INSERT INTO runfox_schema (version, applied_at) VALUES (4, (julianday('now') - 2440587.5) * 86400.0);
INSERT INTO runfox_schema (version, applied_at) VALUES (5, (julianday('now') - 2440587.5) * 86400.0);
INSERT INTO runfox_schema (version, applied_at) VALUES (6, (julianday('now') - 2440587.5) * 86400.0);
INSERT INTO runfox_schema (version, applied_at) VALUES (7, (julianday('now') - 2440587.5) * 86400.0);
INSERT INTO runfox_schema (version, applied_at) VALUES (8, (julianday('now') - 2440587.5) * 86400.0);
INSERT INTO runfox_schema (version, applied_at) VALUES (9, (julianday('now') - 2440587.5) * 86400.0);
INSERT INTO runfox_schema (version, applied_at) VALUES (10, (julianday('now') - 2440587.5) * 86400.0);
INSERT INTO runfox_schema (version, applied_at) VALUES (11, (julianday('now') - 2440587.5) * 86400.0);
INSERT INTO runfox_schema (version, applied_at) VALUES (12, (julianday('now') - 2440587.5) * 86400.0);

-- Alembic's record of the migration revision (runfox db upgrade reads and moves it).
CREATE TABLE runfox_alembic_version (
    version_num VARCHAR(32) NOT NULL,
    CONSTRAINT runfox_alembic_version_pkc PRIMARY KEY (version_num)
);
INSERT INTO runfox_alembic_version (version_num) VALUES ('0012');

COMMIT;
