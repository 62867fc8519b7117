"""Alembic's entry point for kvchat's migrations.

kvchat runs these itself on start, handing over an open connection inside a
write transaction (see kvchat.database.ensure_schema). From the command line
(`alembic upgrade head` in the project root) the database is the one kvchat
would use: KVCHAT_DB, or the default file.
"""

from alembic import context

from kvchat import database, schema


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=schema.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        version_table=database.VERSION_TABLES[connection.dialect.name],
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_from_command_line() -> None:
    engine = database.create_engine(database.resolve_url(None))
    try:
        with engine.connect() as connection:
            connection = connection.execution_options(kvchat_write=True)
            _run(connection)
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("kvchat's migrations need a live database connection.")

_given = context.config.attributes.get("connection")
if _given is None:
    _run_from_command_line()
else:
    _run(_given)
