"""Alembic environment: the target schema is the sqlmodel tables of ``cortexbox.registry.models``; the database is
the connection ``Registry`` hands over (``config.attributes["connection"]``), else ``sqlalchemy.url`` from the
config, else the registry's default URL (``$CORTEXBOX_DATABASE_URL`` or the SQLite file in the cortexbox home)."""

from alembic import context
from sqlalchemy import create_engine
from sqlmodel import SQLModel

import cortexbox.registry.models  # noqa: F401 - registers the tables on SQLModel.metadata
from cortexbox.registry.store import default_url

config = context.config
target_metadata = SQLModel.metadata


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
    )


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url") or default_url(), target_metadata=target_metadata,
                      literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or default_url())
    with engine.connect() as connection:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
