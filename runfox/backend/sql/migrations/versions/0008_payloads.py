"""Offloaded payloads: the ``runfox_payloads`` table (schema 8).

One row per blob, keyed by its content (``sha256:<hex>``); see
``runfox.backend.sql.schema`` and ``runfox.payloads``. Written out here, frozen,
like the baseline. Created only if missing, so a creation cut short (MySQL
commits DDL statement by statement) completes when run again.

Revision ID: 0008
Revises: 0006
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.mysql import LONGTEXT

from runfox.backend.sql.migrations import record_version

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_MYSQL: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4",
                          "mysql_collate": "utf8mb4_bin"}


def _tables() -> sa.MetaData:
    meta = sa.MetaData()
    sa.Table(
        "runfox_payloads", meta,
        sa.Column("payload_key", sa.String(71), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("data", sa.Text().with_variant(LONGTEXT(), "mysql", "mariadb"),
                  nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        **_MYSQL,
    )
    return meta


def upgrade() -> None:
    conn = op.get_bind()
    _tables().create_all(conn, checkfirst=True)
    record_version(conn, 8)


def downgrade() -> None:
    raise NotImplementedError("runfox does not downgrade schemas; restore a backup")
