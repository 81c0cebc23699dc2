"""Alembic's environment for `digest`: always given a connection by `digest.migrations`
(never an ini file or a URL), which holds the migration lock around it."""

from alembic import context

from digest.migrations import include_object, render_item, target_metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=target_metadata(),
    # SQLite cannot ALTER a column: batch operations copy the table (and do plain ALTERs elsewhere)
    render_as_batch=True,
    include_object=include_object,
    render_item=render_item,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
