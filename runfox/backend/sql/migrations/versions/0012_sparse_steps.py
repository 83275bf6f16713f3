"""Steps stored only once they leave their initial state (schema 12); no table changes.

From this schema on, a new execution stores no ``runfox_steps`` row for a step
that is still as a fresh record has it (ready, run 0, never attempted): a
missing row reads as that step, and the first write that changes the step
inserts its row (an upsert). A runfox of schema 11 would update such a missing
row in place, changing nothing and losing the step's change; this revision
exists so that it refuses an upgraded database (``runfox_schema`` holds a newer
version) instead. Records written before it (a row for every step) still load
and are written as before.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

from alembic import op

from runfox.backend.sql.migrations import record_version

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    record_version(op.get_bind(), 12)


def downgrade() -> None:
    raise NotImplementedError("runfox does not downgrade schemas; restore a backup")
