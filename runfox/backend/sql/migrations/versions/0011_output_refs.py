"""Step outputs packed per top-level key (schema 11); no table changes.

From this schema on, a large step output (and a result output in
``runfox_tasks.result``) is stored as an object whose large top-level values
are references (``runfox.payloads.pack_object``), so the value under its state
key shares the blob. A runfox of schema 10 would hand such references to
expressions and executors as if they were values; this revision exists so that
it refuses an upgraded database (``runfox_schema`` holds a newer version)
instead. Records written before it (a whole output as one reference) still load.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from alembic import op

from runfox.backend.sql.migrations import record_version

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    record_version(op.get_bind(), 11)


def downgrade() -> None:
    raise NotImplementedError("runfox does not downgrade schemas; restore a backup")
