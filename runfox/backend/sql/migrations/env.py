"""Alembic's entry point for runfox's migrations (run by ``migrations.upgrade``).

The connection comes from the caller through ``config.attributes``; it is
already inside runfox's transaction and schema lock, so Alembic commits nothing.
"""

from __future__ import annotations

from alembic import context

from runfox.backend.sql.migrations import VERSION_TABLE
from runfox.backend.sql.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("runfox's migrations run through `runfox db upgrade` "
                       "(or runfox.backend.sql.migrations.upgrade), not the alembic command")

context.configure(connection=connection, target_metadata=metadata,
                  version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
