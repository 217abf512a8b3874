"""The participants' SQL database: one SQLAlchemy engine, configured by ``config``.

Its schema is Alembic's (``tasks/migrations``): configuring the database applies every
migration not yet applied, so a demo, a worker or a test never runs on an old schema.
``sagaline db upgrade`` and ``alembic upgrade head`` do the same by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
"""The Alembic scripts of every participant table."""

#: Any number, the same in every process: the advisory lock that migrations and seeding
#: take on PostgreSQL, so that processes starting together do them one at a time.
SCHEMA_LOCK = 0x5A6A_11E0

BASELINE = "0001"
"""The revision whose tables existed before the schema had migrations."""


class Base(DeclarativeBase):
    """The declarative base of every participant table."""


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive one (SQLite keeps no zone) is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; on SQLite, one that waits for the write lock at BEGIN."""
    options: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        options["connect_args"] = {"timeout": 30, "check_same_thread": False}
    engine = create_engine(url, **options)
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
    return engine


def take_schema_lock(connection: Connection) -> None:
    """Wait for the schema lock in the connection's transaction.

    On PostgreSQL an advisory lock; SQLite's ``BEGIN IMMEDIATE`` already holds its only lock.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})


def alembic_config(url: str) -> Config:
    """The Alembic configuration of the participants' schema, for ``url``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["database_url"] = url
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply every migration up to ``revision`` (concurrent callers wait for each other).

    A database made before the schema had migrations (its tables there, no version) is
    first marked as at the baseline, so its rows are kept.
    """
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    tables = set(inspect(engine).get_table_names())
    if "alembic_version" not in tables and "customers" in tables:
        command.stamp(config, BASELINE)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


Seeder = Callable[[Session], None]

#: Every domain's seeders, run by each database when it is configured.
SEEDERS: list[Seeder] = []


class Database:
    """The database the participants write to; ``configure`` it once per process."""

    def __init__(self) -> None:
        """Start unconfigured; using it before :meth:`configure` fails loudly."""
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None
        self._url: str | None = None

    @staticmethod
    def seeder(fn: Seeder) -> Seeder:
        """Register a function that puts a domain's first rows in (idempotently).

        Seeders are shared by every :class:`Database` of the process.
        """
        SEEDERS.append(fn)
        return fn

    def configure(self, url: str) -> None:
        """Connect to ``url``, bring its schema up to date and seed it on first use."""
        if self._url == url:
            return
        engine = make_engine(url)
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._url = url
        upgrade(engine)
        with self.session() as session:
            take_schema_lock(session.connection())
            for seed in SEEDERS:
                seed(session)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine."""
        if self._engine is None:
            raise RuntimeError(
                "the participants' database is not configured; "
                "call tasks.db.database.configure(url) (config does this at start)"
            )
        return self._engine

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction: committed on success, rolled back on error."""
        if self._sessions is None:
            self.engine  # noqa: B018 - raises the explanatory error
        assert self._sessions is not None
        with self._sessions.begin() as session:
            yield session

    def dispose(self, *, close: bool = True) -> None:
        """Drop pooled connections.

        Use ``close=False`` in a forked child, which must not close its parent's connections
        but must not use them either.
        """
        if self._engine is not None:
            self._engine.dispose(close=close)


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    # SQLite upgrades a reading transaction to a writing one without waiting for the lock;
    # taking the write lock at BEGIN makes concurrent workers queue instead of failing.
    connection.isolation_level = None
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin_immediate(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


#: The process's database.
database = Database()
