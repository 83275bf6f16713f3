"""Due work and per-key state (schema 9).

``runfox_workflows`` gains ``due_at`` and ``retry_at`` (each indexed): the sweep
reads the executions due now instead of every running one. Executions still
running get ``due_at = updated_at``, so the first sweep after the upgrade looks
at each once and files it under its real due time. ``runfox_state`` holds the
shared state one row per key; records written before keep their state in the
header's ``state`` column, which rows override, so nothing is copied here.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.mysql import LONGTEXT

from runfox.backend.sql.migrations import record_version

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_MYSQL: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4",
                          "mysql_collate": "utf8mb4_bin"}


def _tables() -> sa.MetaData:
    meta = sa.MetaData()
    sa.Table(
        "runfox_state", meta,
        sa.Column("workflow_execution_id", sa.String(200), primary_key=True),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("value", sa.Text().with_variant(LONGTEXT(), "mysql", "mariadb"),
                  nullable=True),
        sa.Index("ix_runfox_state_version", "workflow_execution_id", "version"),
        **_MYSQL,
    )
    return meta


def upgrade() -> None:
    conn = op.get_bind()
    present = {c["name"] for c in sa.inspect(conn).get_columns("runfox_workflows")}
    if "due_at" not in present:  # a run cut short (MySQL commits DDL as it goes)
        with op.batch_alter_table("runfox_workflows") as batch:
            batch.add_column(sa.Column("due_at", sa.Double, nullable=True))
            batch.add_column(sa.Column("retry_at", sa.Double, nullable=True))
            batch.create_index("ix_runfox_workflows_due", ["due_at"])
            batch.create_index("ix_runfox_workflows_retry", ["retry_at"])
        conn.execute(sa.text("UPDATE runfox_workflows SET due_at = updated_at "
                             "WHERE status IN ('pending', 'in_progress')"))
    _tables().create_all(conn, checkfirst=True)
    record_version(conn, 9)


def downgrade() -> None:
    raise NotImplementedError("runfox does not downgrade schemas; restore a backup")
