"""The step cache: the ``runfox_cache`` table (schema 5).

One row per cache key; see ``runfox.backend.sql.schema``. Written out here, frozen,
like the baseline. Created only if missing, so a creation cut short (MySQL commits
DDL statement by statement) completes when run again.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.mysql import LONGTEXT

from runfox.backend.sql.migrations import record_version

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_MYSQL: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4",
                          "mysql_collate": "utf8mb4_bin"}


def _tables() -> sa.MetaData:
    meta = sa.MetaData()
    sa.Table(
        "runfox_cache", meta,
        sa.Column("cache_key", sa.String(64), primary_key=True),
        sa.Column("fn", sa.String(255), nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("stored_at", sa.Double, nullable=False),
        sa.Column("output", sa.Text().with_variant(LONGTEXT(), "mysql", "mariadb"),
                  nullable=False),
        sa.Index("ix_runfox_cache_fn", "fn"),
        **_MYSQL,
    )
    return meta


def upgrade() -> None:
    conn = op.get_bind()
    _tables().create_all(conn, checkfirst=True)
    record_version(conn, 5)


def downgrade() -> None:
    raise NotImplementedError("runfox does not downgrade schemas; restore a backup")
