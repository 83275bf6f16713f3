"""The claim index in claim order: ``ix_runfox_tasks_queue`` (schema 10).

Claims take jobs with ``state = 'queued' AND visible_at <= now ORDER BY
visible_at, id``. The old index ``ix_runfox_tasks_claim (state, visible_at)``
let PostgreSQL find the rows but not in that order, so a claim sorted every
claimable row; ``(state, visible_at, id)`` hands them out already ordered.
The new index is created before the old one is dropped, and each step is
skipped when already done, so a migration cut short (MySQL commits DDL
statement by statement) completes when run again.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from runfox.backend.sql.migrations import record_version

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_TABLE = "runfox_tasks"
_OLD = "ix_runfox_tasks_claim"
_NEW = "ix_runfox_tasks_queue"


def upgrade() -> None:
    conn = op.get_bind()
    present = {index["name"] for index in sa.inspect(conn).get_indexes(_TABLE)}
    if _NEW not in present:
        op.create_index(_NEW, _TABLE, ["state", "visible_at", "id"])
    if _OLD in present:
        op.drop_index(_OLD, table_name=_TABLE)
    record_version(conn, 10)


def downgrade() -> None:
    raise NotImplementedError("runfox does not downgrade schemas; restore a backup")
