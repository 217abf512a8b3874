"""Test set-up: a real Redis (the embedded one unless SAGALINE_REDIS_URL is set), a real
SQLite file, and real ``celery worker`` processes. Nothing is mocked and nothing skips:
what a test needs is started here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kombu.exceptions
import kombu.pools
import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
HOST = socket.gethostname()
DATA_DIR = Path(tempfile.mkdtemp(prefix="sagaline-tests-"))

# Settings are read once, at import: fix them before anything imports config.
os.environ["SAGALINE_DATA_DIR"] = str(DATA_DIR)
os.environ["SAGALINE_FAULT_INJECTION"] = "true"
os.environ.setdefault("SAGALINE_KEY_PREFIX", "sagaline-test:")
# Short leases and hand-offs, so recovery is quick enough to test.
os.environ["SAGALINE_LEASE"] = "PT2S"
os.environ["SAGALINE_HANDOFF"] = "PT5S"
os.environ["SAGALINE_RECOVERY_INTERVAL"] = "PT1S"

# A real SMTP server on loopback receives every mail the sagas send.
from tests.support.postgres import ThrowawayPostgres, free_port  # noqa: E402
from tests.support.smtp import Inbox, SmtpServer  # noqa: E402

SMTP = SmtpServer(free_port())
SMTP.start()
os.environ["SAGALINE_SMTP_URL"] = SMTP.url

from sagaline import EmbeddedRedis, RedisStore, Sagaline  # noqa: E402

EMBEDDED = EmbeddedRedis(DATA_DIR / "redis")
STARTED_EMBEDDED = "SAGALINE_REDIS_URL" not in os.environ and not EMBEDDED.is_running()

from tests.support.app import app as test_app  # noqa: E402
from tests.support.app import engine as test_engine  # noqa: E402
from tests.support.thunderline import Backend  # noqa: E402


def worker_command(name: str, concurrency: int = 2, queues: str | None = None) -> list[str]:
    """The command line of a real prefork worker running the test app."""
    return [
        sys.executable, "-m", "celery", "-A", "tests.support.app", "worker",
        "--pool=prefork", "-c", str(concurrency), "-l", "info", "-n", f"{name}@%h",
        "--without-mingle", "--without-gossip", *(["-Q", queues] if queues else []),
    ]


#: Every process the tests started, so that none outlives the session or a failed start.
STARTED: list[subprocess.Popen[bytes]] = []


def start_worker(name: str, concurrency: int = 2, *, queues: str | None = None,
                 env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a worker process (in its own process group) and wait until it answers a ping.

    ``queues`` (comma-separated) replaces the default queue; ``env`` adds variables.

    If it does not answer (or pinging fails), it is killed before the error propagates: a
    stray worker would take messages meant for others.
    """
    log = open(DATA_DIR / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        worker_command(name, concurrency, queues), cwd=ROOT, stdout=log,
        stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        start_new_session=True,
    )
    STARTED.append(process)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"worker {name} exited; see {log.name}")
            try:
                replies = test_app.control.ping(timeout=0.5)
            except (OSError, redis.RedisError, kombu.exceptions.OperationalError):
                time.sleep(0.2)  # the broker is away (a restart test): ask again
                continue
            if any(name in host for reply in replies for host in reply):
                return process
        raise RuntimeError(f"worker {name} did not answer within 60 s; see {log.name}")
    except BaseException:
        kill_group(process)
        raise


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    """Stop a worker warmly (it finishes its tasks), or kill it after 30 s."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def engine() -> Sagaline:
    """The engine the tests start sagas with (the test app's)."""
    return test_engine


@pytest.fixture(scope="session")
def store(engine: Sagaline) -> RedisStore:
    """The saga store."""
    return engine.store


class MainWorker:
    """The session's worker process, which a test may stop and start again."""

    def __init__(self) -> None:
        self.process = start_worker("main", concurrency=2)

    def stop(self) -> None:
        stop_worker(self.process)

    def restart(self) -> None:
        if self.process.poll() is None:
            self.stop()
        self.process = start_worker("main", concurrency=2)


@pytest.fixture(scope="session")
def worker(engine: Sagaline) -> Iterator[MainWorker]:
    """A real prefork worker process (2 children) for the whole session."""
    test_app.control.purge()
    main = MainWorker()
    yield main
    main.stop()


@contextlib.contextmanager
def pause_main_worker() -> Iterator[None]:
    """The session worker takes no message from its queue while inside (messages wait)."""
    test_app.control.cancel_consumer("celery", destination=[f"main@{HOST}"], reply=True,
                                     timeout=5)
    try:
        # A fetch (BRPOP, 1 s) begun before the cancel may still take one message, and put
        # it back: let it run out before the test relies on the queue.
        time.sleep(1.5)
        queues = test_app.control.inspect(timeout=1).active_queues() or {}
        others = [node for node, qs in queues.items()
                  if any(q["name"] == "celery" for q in qs)]
        assert not others, f"other workers take messages from the queue: {others}"
        yield
    finally:
        test_app.control.add_consumer("celery", destination=[f"main@{HOST}"], reply=True,
                                      timeout=5)
        _until_main_consumes()


def _until_main_consumes(timeout: float = 10.0) -> None:
    """Wait until the session worker says it consumes its queue again, and a fetch cycle
    more: a saga the next test starts at once was seen lost (its first message never ran)
    when published just as the consumer came back.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queues = test_app.control.inspect(destination=[f"main@{HOST}"], timeout=1
                                          ).active_queues() or {}
        if any(q["name"] == "celery" for qs in queues.values() for q in qs):
            break
    time.sleep(1.5)


@pytest.fixture
def main_worker_paused(worker: MainWorker) -> Iterator[None]:
    """The session worker stops taking messages for the test (tests that start their own
    workers, to kill them, need every message to go to those).
    """
    with pause_main_worker():
        yield


def start_beat() -> subprocess.Popen[bytes]:
    """A real ``celery beat``: it sends the recovery sweep every second."""
    log = open(DATA_DIR / "beat.log", "ab")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.support.app", "beat", "-l", "info",
         "-s", str(DATA_DIR / "beat-schedule")],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
    )
    STARTED.append(process)
    return process


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process and every child of it: a machine's worth of crash."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.fixture(autouse=True)
def no_faults(engine: Sagaline) -> Iterator[None]:
    """Every test starts and ends with no injected fault."""
    engine.store.clear_faults()
    yield
    engine.store.clear_faults()


@pytest.fixture
def calls(request: pytest.FixtureRequest, engine: Sagaline) -> Any:
    """A unique tag for the test's sagas, and a way to read what their operations noted."""
    from tests.support.steps import calls_key

    tag = f"{request.node.name}-{time.monotonic_ns()}"

    class Calls:
        def __init__(self) -> None:
            self.tag = tag

        def read(self) -> list[str]:
            return list(engine.store.client.lrange(calls_key(tag), 0, -1))

    return Calls()


@pytest.fixture(scope="session")
def inbox() -> Inbox:
    """The mails the loopback SMTP server received (every saga's mail goes there)."""
    return SMTP.inbox


@pytest.fixture(scope="session")
def postgres() -> Iterator[ThrowawayPostgres]:
    """A throwaway PostgreSQL server, started from the installed binaries."""
    server = ThrowawayPostgres()
    server.start()
    yield server
    server.stop()


PG_PREFIX = "sagaline-test-pg:"
"""Saga state of the PostgreSQL backend's runs lives apart from the SQLite ones'."""


@pytest.fixture(scope="session")
def pg_backend(postgres: ThrowawayPostgres, worker: MainWorker) -> Iterator[Backend]:
    """The project on PostgreSQL: its own engine (queue ``pg``, key prefix
    :data:`PG_PREFIX`) and a worker whose participants write to PostgreSQL.
    """
    from config.celery import create_app
    from config.settings import Settings
    from tasks.db import Database

    url = postgres.create_database("sagaline")
    env = {"SAGALINE_DATABASE_URL": url, "SAGALINE_KEY_PREFIX": PG_PREFIX,
           "SAGALINE_QUEUE": "pg", "SAGALINE_TRAINING_QUEUE": "pg-training"}
    db = Database()
    _, pg_engine = create_app(Settings(database_url=url, key_prefix=PG_PREFIX, queue="pg",
                                       training_queue="pg-training"),
                              db=db, choreographies=())
    test_app.set_current()
    ENGINES.append(pg_engine)
    process = start_worker("pg", queues="pg,pg-training", env=env)
    yield Backend("postgresql", pg_engine, db)
    stop_worker(process)
    db.dispose()


@pytest.fixture(scope="session")
def training_worker(worker: MainWorker) -> Iterator[subprocess.Popen[bytes]]:
    """A worker for the ``training`` queue alone (NAS trials), as a deployment runs one."""
    process = start_worker("training", concurrency=2, queues="training")
    yield process
    if process.poll() is None:
        stop_worker(process)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, worker: MainWorker) -> Backend:
    """The project on each database in turn: SQLite (the session's worker), PostgreSQL."""
    if request.param == "sqlite":
        from tasks.db import database

        return Backend("sqlite", test_engine, database)
    backend: Backend = request.getfixturevalue("pg_backend")
    return backend


@pytest.fixture
def faults(backend: Backend) -> Iterator[RedisStore]:
    """The backend's store, for injecting faults; they are cleared after the test."""
    store = backend.engine.store
    store.clear_faults()
    yield store
    store.clear_faults()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests that restart shared services (Redis) after all the others."""
    items.sort(key=lambda item: item.get_closest_marker("disruptive") is not None)


def reset_broker_connections() -> None:
    """Drop this process's pooled broker connections (after the broker restarted)."""
    # kombu keeps pools in a registry of its own, from which Celery takes them again.
    kombu.pools.reset()
    test_app._pool = None
    test_app.amqp._producer_pool = None


EMITTED_EVENTS = ROOT / "var" / "test-events.jsonl"
"""Where the session writes every event it published, for ``sagaline events lint``."""


#: The engines whose published events the session writes out (the PostgreSQL backend's too).
ENGINES: list[Sagaline] = [test_engine]


def write_emitted_events() -> None:
    """Write the events the session's sagas published, one JSON per line."""
    events = []
    for engine in ENGINES:
        if engine.bus is None:
            continue
        try:
            events += engine.bus.read()
        except redis.RedisError:
            continue
    EMITTED_EVENTS.parent.mkdir(exist_ok=True)
    EMITTED_EVENTS.write_text("".join(e.model_dump_json() + "\n" for e in events))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Kill any process a test left behind; stop the embedded Redis if this session
    started it.
    """
    for process in STARTED:
        if process.poll() is None:
            kill_group(process)
    write_emitted_events()
    SMTP.stop()
    if STARTED_EMBEDDED:
        EMBEDDED.stop()


# Imported last: it reads what this module defines above.
from tests.support.api import ApiServer, start_api  # noqa: E402


@pytest.fixture(scope="module")
def api(worker: MainWorker) -> Iterator[ApiServer]:
    """``sagaline api`` for the test app, as a process of its own (one a test module)."""
    server = start_api("main")
    yield server
    server.stop()


@pytest.fixture
def client(api: ApiServer) -> Iterator[httpx.Client]:
    """An HTTP client of :func:`api` that sends the raw token."""
    with api.client() as http:
        yield http
