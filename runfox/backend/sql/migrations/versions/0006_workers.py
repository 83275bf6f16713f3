"""Live workers: the ``runfox_workers`` table (schema 6).

One row per worker; see ``runfox.backend.sql.schema`` and
``runfox.backend.workers``. Written out here, frozen, like the baseline.
Created only if missing, so a creation cut short (MySQL commits DDL statement by
statement) completes when run again.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.mysql import LONGTEXT

from runfox.backend.sql.migrations import record_version

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_MYSQL: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4",
                          "mysql_collate": "utf8mb4_bin"}


def _tables() -> sa.MetaData:
    meta = sa.MetaData()
    sa.Table(
        "runfox_workers", meta,
        sa.Column("worker_id", sa.String(255), primary_key=True),
        sa.Column("heartbeat_at", sa.Double, nullable=False),
        sa.Column("data", sa.Text().with_variant(LONGTEXT(), "mysql", "mariadb"),
                  nullable=False),
        **_MYSQL,
    )
    return meta


def upgrade() -> None:
    conn = op.get_bind()
    _tables().create_all(conn, checkfirst=True)
    record_version(conn, 6)


def downgrade() -> None:
    raise NotImplementedError("runfox does not downgrade schemas; restore a backup")
