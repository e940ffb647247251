"""Alembic's environment for raybot: always run from bot.store with a connection already open.

The store hands the connection (and holds the cross-replica migration lock); nothing here reads
a URL or a config file, so `raybot serve` needs no alembic.ini.
"""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=None,
    # SQLite alters tables by copying them; batch mode does that for migrations that need it.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
