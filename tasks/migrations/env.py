"""Alembic's entry point for the participants' schema (``alembic upgrade head``).

Run by ``tasks.db.upgrade`` with a connection already in a transaction, or by the
``alembic`` command with ``sqlalchemy.url`` from ``alembic.ini`` or ``SAGALINE_DATABASE_URL``.
Migrations run in one transaction that first takes a lock, so two processes starting at once
apply them once: PostgreSQL's advisory lock, SQLite's write lock (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import os
from pathlib import Path

from alembic import context
from sqlalchemy import Connection

import tasks.schema
from tasks.db import Base, make_engine, take_schema_lock

tasks.schema.load()


def run(connection: Connection) -> None:
    """Lock, then apply the migrations on ``connection`` in its transaction."""
    take_schema_lock(connection)
    context.configure(connection=connection, target_metadata=Base.metadata,
                      transactional_ddl=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def url() -> str:
    """The database to migrate.

    The one ``tasks.db.alembic_config`` names, else the one the app's settings find:
    ``SAGALINE_DATABASE_URL``, else the SQLite file in ``SAGALINE_DATA_DIR``, else
    ``alembic.ini``'s URL.
    """
    given = context.config.attributes.get("database_url")
    if given:
        return str(given)
    if os.environ.get("SAGALINE_DATABASE_URL"):
        return os.environ["SAGALINE_DATABASE_URL"]
    if os.environ.get("SAGALINE_DATA_DIR"):
        return f"sqlite:///{Path(os.environ['SAGALINE_DATA_DIR']).resolve() / 'sagaline.db'}"
    return context.config.get_main_option("sqlalchemy.url") or ""


given = context.config.attributes.get("connection")
if given is not None:
    run(given)
else:
    with make_engine(url()).begin() as connection:
        run(connection)
