"""A real Flower process for the tests, read through its HTTP API (``urllib``, no client).

Flower knows only the tasks whose events it received while it ran, so a test starts it
before its sagas and waits until it sees a task (:meth:`Flower.wait_until_watching`).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: The states in which Flower shows a task ended.
FINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})

USER, PASSWORD = "flower-test", "s3cret-for-tests"
CREDENTIALS = f"{USER}:{PASSWORD}"


def sagaline_flower(app: str, *options: str) -> list[str]:
    """The command line of ``sagaline --app APP flower OPTIONS`` with this Python."""
    return [sys.executable, "-m", "sagaline.cli", "--app", app, "flower", *options]


class Flower:
    """A Flower process and the base URL of its API."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self.log = log

    def get(self, path: str, *, credentials: str | None = CREDENTIALS) -> tuple[int, Any]:
        """GET ``path``: the status and the JSON body (the text when it is not JSON)."""
        request = urllib.request.Request(self.url + path)
        if credentials is not None:
            token = base64.b64encode(credentials.encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                status, body = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read().decode()
        try:
            return status, json.loads(body)
        except json.JSONDecodeError:
            return status, body

    def task(self, task_id: str) -> dict[str, Any] | None:
        """What Flower shows of one task (``/api/task/info``), or ``None`` if it knows none."""
        status, body = self.get(f"/api/task/info/{task_id}")
        if status == 404:
            return None
        assert status == 200, (status, body)
        return dict(body)

    def tasks(self, **query: str) -> dict[str, dict[str, Any]]:
        """The tasks Flower lists (``/api/tasks``), by id."""
        status, body = self.get(f"/api/tasks?{urllib.parse.urlencode(query)}")
        assert status == 200, (status, body)
        return dict(body)

    def wait_for(self, task_id: str, check: Callable[[dict[str, Any]], bool], *,
                 timeout: float = 30.0, what: str = "") -> dict[str, Any]:
        """Poll one task until ``check`` holds for what Flower shows, or fail saying why."""
        deadline = time.monotonic() + timeout
        seen: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            seen = self.task(task_id)
            if seen is not None and check(seen):
                return seen
            time.sleep(0.05)
        state = None if seen is None else seen.get("state")
        raise AssertionError(f"task {task_id} not {what or 'as expected'} within {timeout} s; "
                             f"Flower shows {state!r}: {seen}")

    def wait_for_state(self, task_id: str, *states: str, timeout: float = 30.0
                       ) -> dict[str, Any]:
        """Poll one task until Flower shows it in one of ``states``."""
        return self.wait_for(task_id, lambda t: t.get("state") in states, timeout=timeout,
                             what=" or ".join(states))

    def tasks_of(self, saga_id: str) -> dict[str, dict[str, Any]]:
        """The tasks of one saga (their ids start with the saga's id), by id."""
        return {i: t for i, t in self.tasks(limit="100000").items() if i.startswith(saga_id)}

    def wait_until_final(self, saga_id: str, task_ids: list[str], *, timeout: float = 30.0
                         ) -> dict[str, dict[str, Any]]:
        """Poll until Flower shows each of ``task_ids`` and every task of the saga ended."""
        deadline = time.monotonic() + timeout
        tasks: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            tasks = self.tasks_of(saga_id)
            if all(i in tasks for i in task_ids) and all(
                    t.get("state") in FINAL_STATES for t in tasks.values()):
                return tasks
            time.sleep(0.1)
        states = {i: t.get("state") for i, t in tasks.items()}
        raise AssertionError(f"the tasks of saga {saga_id} did not all end within {timeout} s "
                             f"(expected {task_ids}); Flower shows {states}")

    def wait_until_answering(self, timeout: float = 60.0) -> None:
        """Wait until the API answers an authenticated request; fail if Flower exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Flower exited with {self.process.returncode}; see "
                                   f"{self.log}")
            try:
                status, _ = self.get("/api/tasks?limit=1")
            except OSError:  # not listening yet
                time.sleep(0.1)
                continue
            if status == 200:
                return
            time.sleep(0.1)
        raise RuntimeError(f"Flower did not answer within {timeout} s; see {self.log}")

    def wait_until_watching(self, start_probe: Callable[[], str], timeout: float = 60.0
                            ) -> None:
        """Wait until Flower receives task events: start probes until it shows one.

        ``start_probe`` starts a saga and returns the id of one of its tasks. Flower
        subscribes to events after its API answers, so the first probes may go unseen.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            probe = start_probe()
            retry_at = time.monotonic() + 3
            while time.monotonic() < min(retry_at, deadline):
                if self.task(probe) is not None:
                    return
                time.sleep(0.1)
        raise RuntimeError(f"Flower received no task event within {timeout} s; see {self.log}")

    def stop(self) -> None:
        """Stop Flower (SIGTERM), or kill it after 10 s."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_flower(argv: list[str], port: int, *, cwd: Path, log: Path,
                 env: dict[str, str], started: list[subprocess.Popen[bytes]]) -> Flower:
    """Start Flower (``argv``, in its own process group) and wait until its API answers.

    The process is added to ``started`` (killed at the end of the session); if its API does
    not answer, it is killed before the error propagates.
    """
    output = open(log, "ab")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(argv, cwd=cwd, stdout=output, stderr=subprocess.STDOUT,
                               env={**os.environ, **env}, start_new_session=True)
    started.append(process)
    flower = Flower(process, port, log)
    try:
        flower.wait_until_answering()
    except BaseException:
        process.kill()
        process.wait()
        raise
    return flower
