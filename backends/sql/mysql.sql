-- runfox schema version 12 (revision 0012) for MySQL 8 / MariaDB 10.6+ (InnoDB; runfox.backend.sql).
-- For teams that manage schemas themselves: run this once, then open the
-- backend with create_tables=False. It creates what runfox would create on
-- first use; tests/test_sql_ddl.py checks that the two agree.
-- A later runfox upgrades a database made from it with `runfox db upgrade`.
-- utf8mb4_bin: keys and step ids compare case-sensitively, as runfox does.
-- MySQL DDL is not transactional; run it on an empty database.

CREATE TABLE runfox_schema (
    version     INTEGER NOT NULL,
    applied_at  DOUBLE  NOT NULL,
    PRIMARY KEY (version)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

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
    spec                  LONGTEXT     NOT NULL,
    inputs                LONGTEXT     NOT NULL,
    state                 LONGTEXT     NOT NULL,
    outcome               LONGTEXT     NOT NULL,
    parent                LONGTEXT     NULL,
    due_at                DOUBLE       NULL,
    retry_at              DOUBLE       NULL,
    PRIMARY KEY (workflow_execution_id)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;
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
    data                  LONGTEXT     NOT NULL,
    PRIMARY KEY (workflow_execution_id, step_id)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;
CREATE INDEX ix_runfox_steps_version ON runfox_steps (workflow_execution_id, version);

-- The job queue: claimable while state = 'queued' and visible_at has passed.
CREATE TABLE runfox_tasks (
    id                    BIGINT       NOT NULL AUTO_INCREMENT,
    workflow_execution_id VARCHAR(200) NOT NULL,
    step_id               VARCHAR(255) NOT NULL,
    run_id                INTEGER      NOT NULL,
    state                 VARCHAR(16)  NOT NULL,
    visible_at            DOUBLE,
    deliveries            INTEGER      NOT NULL,
    claim_token           BIGINT,
    payload               LONGTEXT     NOT NULL,
    result                LONGTEXT,
    created_at            DOUBLE       NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT uq_runfox_tasks_job UNIQUE (workflow_execution_id, step_id, run_id)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;
CREATE INDEX ix_runfox_tasks_queue ON runfox_tasks (state, visible_at, id);

-- Idempotency keys: one row per key, written with the execution it created.
-- The shared state, one row per key (schema 9); value NULL: the key was removed.
CREATE TABLE runfox_state (
    workflow_execution_id VARCHAR(200) NOT NULL,
    name                  VARCHAR(255) NOT NULL,
    version               INTEGER      NOT NULL,
    value                 LONGTEXT,
    PRIMARY KEY (workflow_execution_id, name)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;
CREATE INDEX ix_runfox_state_version ON runfox_state (workflow_execution_id, version);

CREATE TABLE runfox_keys (
    idempotency_key       VARCHAR(255) NOT NULL,
    workflow_execution_id VARCHAR(200) NOT NULL,
    created_at            DOUBLE NOT NULL,
    PRIMARY KEY (idempotency_key)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

-- Schedules: due_at is the next fire time (0 while fires are pending, NULL when paused).
CREATE TABLE runfox_schedules (
    name    VARCHAR(100) NOT NULL,
    version INTEGER      NOT NULL,
    due_at  DOUBLE,
    spec    LONGTEXT NOT NULL,
    data    LONGTEXT NOT NULL,
    PRIMARY KEY (name)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;
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
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;
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
    data                  LONGTEXT NOT NULL,
    PRIMARY KEY (workflow_execution_id, version, idx)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

-- Live workers: one row per worker, rewritten every heartbeat interval, deleted on
-- a clean stop (runfox.backend.workers).
CREATE TABLE runfox_workers (
    worker_id             VARCHAR(255) NOT NULL,
    heartbeat_at          DOUBLE       NOT NULL,
    data                  LONGTEXT NOT NULL,
    PRIMARY KEY (worker_id)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

-- The step cache: one row per key (sha256 hex of fn, inputs and cache version).
CREATE TABLE runfox_cache (
    cache_key             VARCHAR(64)  NOT NULL,
    fn                    VARCHAR(255) NOT NULL,
    version               TEXT         NOT NULL,
    stored_at             DOUBLE NOT NULL,
    output                LONGTEXT NOT NULL,
    PRIMARY KEY (cache_key)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;
CREATE INDEX ix_runfox_cache_fn ON runfox_cache (fn);

-- Offloaded payloads: one row per blob, keyed by its content (sha256:<hex>).
CREATE TABLE runfox_payloads (
    payload_key           VARCHAR(71)  NOT NULL,
    size                  BIGINT       NOT NULL,
    data                  LONGTEXT NOT NULL,
    created_at            DOUBLE NOT NULL,
    PRIMARY KEY (payload_key)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;

INSERT INTO runfox_schema (version, applied_at) VALUES (1, UNIX_TIMESTAMP());
INSERT INTO runfox_schema (version, applied_at) VALUES (2, UNIX_TIMESTAMP());
INSERT INTO runfox_schema (version, applied_at) VALUES (3, UNIX_TIMESTAMP());
INSERT INTO runfox_schema (version, applied_at) VALUES (4, UNIX_TIMESTAMP());
INSERT INTO runfox_schema (version, applied_at) VALUES (5, UNIX_TIMESTAMP());
INSERT INTO runfox_schema (version, applied_at) VALUES (6, UNIX_TIMESTAMP());
INSERT INTO runfox_schema (version, applied_at) VALUES (7, UNIX_TIMESTAMP());
INSERT INTO runfox_schema (version, applied_at) VALUES (8, UNIX_TIMESTAMP());
INSERT INTO runfox_schema (version, applied_at) VALUES (9, UNIX_TIMESTAMP());
INSERT INTO runfox_schema (version, applied_at) VALUES (10, UNIX_TIMESTAMP());
INSERT INTO runfox_schema (version, applied_at) VALUES (11, UNIX_TIMESTAMP());
INSERT INTO runfox_schema (version, applied_at) VALUES (12, UNIX_TIMESTAMP());

-- Alembic's record of the migration revision (runfox db upgrade reads and moves it).
CREATE TABLE runfox_alembic_version (
    version_num VARCHAR(32) NOT NULL,
    CONSTRAINT runfox_alembic_version_pkc PRIMARY KEY (version_num)
) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin;
INSERT INTO runfox_alembic_version (version_num) VALUES ('0012');
