"""A throwaway PostgreSQL server for the tests, from the installed binaries.

pytest-postgresql's process fixture runs ``pg_ctl`` as the current user, and PostgreSQL
refuses to run as root (which CI is); so this starts the server itself, as the ``postgres``
user when the tests run as root. Its data lives in a temporary folder and is removed when
it stops. ``.ci/run`` installs Debian's ``postgresql`` package when the binaries are missing.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def binaries() -> Path:
    """The folder of ``initdb`` and ``pg_ctl``; raises with what to install when missing."""
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(p.split("/")[4]))
    if versions:  # Debian's layout: the server's binaries are not on the PATH
        return Path(versions[-1]).parent
    found = shutil.which("initdb")
    if found and (Path(found).parent / "createdb").exists():
        return Path(found).parent
    raise RuntimeError("PostgreSQL's binaries (initdb, pg_ctl) are missing: install them "
                       "(apt-get install postgresql; .ci/run does)")


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThrowawayPostgres:
    """A PostgreSQL server on 127.0.0.1 with trust authentication, for one test session."""

    def __init__(self) -> None:
        self.bin = binaries()
        self.root = Path(tempfile.mkdtemp(prefix="sagaline-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0

    def _run(self, *command: str) -> None:
        argv = [str(self.bin / command[0]), *command[1:]]
        if self.as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        subprocess.run(argv, check=True, capture_output=True, cwd="/")

    def start(self) -> None:
        """Create the cluster and start the server; wait until it accepts connections."""
        if self.as_root:
            shutil.chown(self.root, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8")
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l",
                  str(self.root / "server.log"), "-w", "-t", "60", "start")

    def create_database(self, name: str) -> str:
        """Create database ``name``; return its SQLAlchemy URL (psycopg 3)."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        """Stop the server at once and remove its files."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
