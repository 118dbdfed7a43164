"""Alembic environment of the recommendations store, run only through ``RecStore.upgrade`` (no alembic.ini).

The store hands over its open connection (inside its transaction) and the reader role's name as config
attributes; new revisions go in ``versions/`` with ``down_revision`` set to the previous one.
"""

from alembic import context

from services.recstore import VERSION_TABLE

context.configure(connection=context.config.attributes["connection"], version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
