"""The participants' SQL database: one SQLAlchemy engine, configured by ``config``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker


class Base(DeclarativeBase):
    """The declarative base of every participant table."""


Seeder = Callable[[Session], None]


class Database:
    """The database the participants write to; ``configure`` it once per process."""

    def __init__(self) -> None:
        """Start unconfigured; using it before :meth:`configure` fails loudly."""
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None
        self._url: str | None = None
        self._seeders: list[Seeder] = []

    def seeder(self, fn: Seeder) -> Seeder:
        """Register a function that puts a domain's first rows in (idempotently)."""
        self._seeders.append(fn)
        return fn

    def configure(self, url: str) -> None:
        """Connect to ``url``, create the tables and seed them on first use."""
        if self._url == url:
            return
        options: dict[str, Any] = {"pool_pre_ping": True}
        if url.startswith("sqlite"):
            options["connect_args"] = {"timeout": 30, "check_same_thread": False}
        engine = create_engine(url, **options)
        if url.startswith("sqlite"):
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin_immediate)
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._url = url
        Base.metadata.create_all(engine)
        with self.session() as session:
            for seed in self._seeders:
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
