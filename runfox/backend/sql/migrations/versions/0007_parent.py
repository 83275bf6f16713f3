"""Sub-workflows: the nullable ``parent`` column of ``runfox_workflows`` (schema 7).

A child execution names its parent step run there (JSON, written once); see
``runfox.backend.children``. Added only if missing, so an upgrade cut short (MySQL
commits DDL statement by statement) completes when run again.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.mysql import LONGTEXT

from runfox.backend.sql.migrations import record_version

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    columns = {c["name"] for c in sa.inspect(conn).get_columns("runfox_workflows")}
    if "parent" not in columns:
        op.add_column("runfox_workflows", sa.Column(
            "parent", sa.Text().with_variant(LONGTEXT(), "mysql", "mariadb"), nullable=True))
    record_version(conn, 7)


def downgrade() -> None:
    raise NotImplementedError("runfox does not downgrade schemas; restore a backup")
