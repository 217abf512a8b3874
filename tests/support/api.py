"""The HTTP API served by a real ``sagaline api`` process, clients for it, and an SSE reader.

The server runs the test app (``--app tests.support.app``) on the session's Redis, with
its tokens in its own environment only: one raw token (:data:`TOKEN`) and one given only
as its hash (:data:`HASHED_TOKEN`).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import DATA_DIR, ROOT, STARTED, kill_group
from tests.support.postgres import free_port

TOKEN = secrets.token_urlsafe(32)
"""A token the server is given raw, in ``SAGALINE_API_TOKENS``."""
HASHED_TOKEN = secrets.token_urlsafe(32)
"""A token the server is given only as its hash, in ``SAGALINE_API_TOKEN_HASHES``."""


def token_hash(token: str) -> str:
    """``sha256:<hex>`` of a token, as ``SAGALINE_API_TOKEN_HASHES`` takes it."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def api_env(**extra: str) -> dict[str, str]:
    """The server's environment: the tests' own, the project on the path, the tokens."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "SAGALINE_API_TOKENS": TOKEN,
            "SAGALINE_API_TOKEN_HASHES": token_hash(HASHED_TOKEN), **extra}


def api_command(*args: str) -> list[str]:
    """``python -m sagaline.cli --app tests.support.app api ARGS``."""
    return [sys.executable, "-m", "sagaline.cli", "--app", "tests.support.app", "api", *args]


@dataclass
class ApiServer:
    """A running ``sagaline api`` process and where it listens."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def client(self, token: str | None = TOKEN, **options: Any) -> httpx.Client:
        """A client that sends ``token`` (none when ``None``)."""
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **options)

    def output(self) -> str:
        """What the server printed so far."""
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """Kill the server and its children."""
        if self.process.poll() is None:
            kill_group(self.process)


def start_api(name: str, env: dict[str, str] | None = None) -> ApiServer:
    """Start ``sagaline api`` on a free port and wait until ``/healthz`` answers.

    Raises:
        RuntimeError: It exited, or did not answer within 60 s (it is killed then); the
            message holds what it printed.
    """
    port = free_port()
    log = DATA_DIR / f"api-{name}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(api_command("--port", str(port)), cwd=ROOT, stdout=out,
                                   stderr=subprocess.STDOUT, env=env or api_env(),
                                   start_new_session=True)
    STARTED.append(process)
    server = ApiServer(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sagaline api exited {process.returncode}:\n{server.output()}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"sagaline api did not answer within 60 s:\n{server.output()}")


@dataclass
class SseEvent:
    """One server-sent event as received."""

    kind: str
    """Its ``event`` field (``message`` when it had none)."""
    data: Any
    """Its data, decoded from JSON."""
    id: str | None = None
    """Its ``id`` field."""
    received: float = field(default_factory=time.time)
    """When it arrived (epoch seconds)."""


def sse_events(response: httpx.Response) -> Iterator[SseEvent]:
    """The events of a ``text/event-stream`` response, as they arrive."""
    kind, data, event_id = "message", [], None
    for line in response.iter_lines():
        if not line:
            if data:
                yield SseEvent(kind, json.loads("\n".join(data)), event_id)
            kind, data, event_id = "message", [], None
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            kind = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value
