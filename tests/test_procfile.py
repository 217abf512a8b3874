"""The ``Procfile``, run for real by honcho: every process it names, checked at its job.

honcho starts the web API, a worker, a training worker, beat and Flower as the Procfile
says, on the tests' Redis under a key prefix and queues of their own (so the session's
workers never take their messages) and a data folder of their own (SQLite, the beat
schedule). The test then uses each one: the API answers and a saga started through it
completes on the Procfile's worker; beat starts a scheduled saga; Flower answers with its
credentials and refuses without them, and lists both workers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sagaline import SagaStatus
from tests.conftest import EMBEDDED, ROOT, STARTED
from tests.support.api import TOKEN
from tests.support.postgres import free_port

FLOWER_AUTH = ("ops", "procfile-" + uuid.uuid4().hex)
PROCESSES = {"web", "worker", "training", "beat", "flower"}


@dataclass
class Honcho:
    """The honcho process, where its output goes, and the ports it serves on."""

    process: subprocess.Popen[bytes]
    log: Path
    api: str
    flower: str
    prefix: str

    def output(self) -> str:
        """What every process printed so far."""
        return self.log.read_text(errors="replace")


def eventually(check: Callable[[], Any], what: str, honcho: Honcho, timeout: float = 120
               ) -> Any:
    """``check()``'s first truthy answer, trying until ``timeout``; fails saying ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if honcho.process.poll() is not None:
            raise AssertionError(f"honcho exited {honcho.process.returncode} while waiting "
                                 f"for {what}:\n{honcho.output()[-4000:]}")
        try:
            answer = check()
        except httpx.HTTPError:
            answer = None
        if answer:
            return answer
        time.sleep(0.25)
    raise AssertionError(f"no {what} after {timeout:g} s:\n{honcho.output()[-4000:]}")


@pytest.fixture(scope="module")
def honcho(worker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Honcho]:
    """``honcho start`` on the project's Procfile, isolated from the session's workers."""
    tag = uuid.uuid4().hex[:8]
    data = tmp_path_factory.mktemp("procfile")
    port, flower_port = free_port(), free_port()
    schedule = {"name": f"procfile-{tag}", "saga": "order_processing", "every_s": 3,
                "inputs": {"customer_id": "CUST-123", "total_amount": "1.00",
                           "items": [{"product_id": "PROD-1", "quantity": 1}]}}
    env = {
        **os.environ,
        "SAGALINE_REDIS_URL": os.environ.get("SAGALINE_REDIS_URL", EMBEDDED.url),
        "SAGALINE_KEY_PREFIX": f"procfile-{tag}:", "SAGALINE_QUEUE": f"procfile-{tag}",
        "SAGALINE_TRAINING_QUEUE": f"procfile-training-{tag}",
        "SAGALINE_DATA_DIR": str(data), "SAGALINE_API_TOKENS": TOKEN,
        "SAGALINE_FLOWER_BASIC_AUTH": ":".join(FLOWER_AUTH),
        "SAGALINE_FLOWER_PORT": str(flower_port), "SAGALINE_FLOWER_ADDRESS": "127.0.0.1",
        "SAGALINE_EXTRA_SCHEDULES": json.dumps([schedule]), "SAGALINE_SCHEDULES_ENABLED": "true",
        "PYTHONUNBUFFERED": "1",
        # The Procfile names console scripts (celery, sagaline): this environment's.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    env.pop("SAGALINE_API_TOKEN_HASHES", None)
    log = data / "honcho.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "honcho", "-f", str(ROOT / "Procfile"), "-d", str(ROOT),
             "start", "-p", str(port)], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
    STARTED.append(process)
    yield Honcho(process, log, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{flower_port}",
                 f"procfile-{tag}:")
    os.killpg(process.pid, signal.SIGTERM)  # honcho stops every process it started
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def start_through_api(honcho: Honcho, saga: str, inputs: dict[str, Any]) -> str:
    """Start ``saga`` with a POST to the Procfile's API, once it is ready; the saga's id."""
    eventually(lambda: httpx.get(f"{honcho.api}/readyz", timeout=2).status_code == 200,
               "ready API", honcho)
    started = httpx.post(f"{honcho.api}/sagas/{saga}", headers=HEADERS, timeout=10,
                         json=inputs)
    assert started.status_code == 202, started.text
    return str(started.json()["saga_id"])


def final_summary(honcho: Honcho, saga_id: str, timeout: float = 120) -> dict[str, Any]:
    """The saga's summary from the API, once it is final."""

    def final() -> dict[str, Any] | None:
        body: dict[str, Any] = httpx.get(f"{honcho.api}/sagas/{saga_id}", headers=HEADERS,
                                         timeout=5).json()
        return body if SagaStatus(body["status"]).is_final else None

    return dict(eventually(final, f"final saga {saga_id}", honcho, timeout))


def test_honcho_starts_every_process_the_procfile_names() -> None:
    names = {line.split(":", 1)[0] for line in (ROOT / "Procfile").read_text().splitlines()
             if line.strip() and not line.startswith("#")}
    assert names == PROCESSES


def test_the_api_answers_and_a_saga_started_through_it_completes_on_the_worker(
        honcho: Honcho) -> None:
    saga_id = start_through_api(honcho, "order_processing", {
        "customer_id": "CUST-123", "total_amount": "20.00",
        "items": [{"product_id": "PROD-1", "quantity": 1}]})
    run = final_summary(honcho, saga_id)
    assert run["status"] == "completed", run
    assert httpx.get(f"{honcho.api}/sagas/{saga_id}", timeout=5).status_code == 401


def test_a_search_trains_its_trials_on_the_training_worker(honcho: Honcho) -> None:
    """A small Cerebros NAS search started through the API: its trials go to the training
    queue, which only the Procfile's ``training`` process consumes, and it completes.
    """
    saga_id = start_through_api(honcho, "cerebros_nas", {
        "search_space": {"layers": [1], "units": [16, 32]}, "max_trials": 2, "epochs": 2,
        "concurrency": 2})
    run = final_summary(honcho, saga_id, timeout=180)
    assert run["status"] == "completed", run
    trained = [line for line in honcho.output().splitlines()
               if " training.1 " in line and "bolt.nas.train_trial" in line
               and "succeeded" in line]
    assert len(trained) >= 2, "the trials did not run on the training worker"


def test_beat_starts_the_scheduled_saga(honcho: Honcho) -> None:
    """The schedule given in the environment fires every 3 s: beat sends the firing, the
    worker starts its saga, keyed by the schedule's name and due time.
    """
    eventually(lambda: httpx.get(f"{honcho.api}/readyz", timeout=2).status_code == 200,
               "ready API", honcho)

    def scheduled() -> list[dict[str, Any]]:
        page = httpx.get(f"{honcho.api}/sagas", params={"name": "order_processing",
                                                        "status": "completed", "limit": 50},
                         headers=HEADERS, timeout=5).json()
        return [s for s in page["sagas"]
                if s.get("causation_id") and s["inputs"]["total_amount"] == "1.00"]

    runs = eventually(scheduled, "saga started by beat", honcho)
    assert runs[0]["status"] == "completed"
    assert f"Sending due task schedule:{honcho.prefix.rstrip(':')}" in honcho.output()


def test_flower_answers_with_its_credentials_only_and_sees_both_workers(
        honcho: Honcho) -> None:
    eventually(lambda: httpx.get(f"{honcho.flower}/healthcheck", timeout=2).status_code
               in (200, 401), "Flower", honcho)
    assert httpx.get(f"{honcho.flower}/api/workers", timeout=10).status_code == 401
    assert httpx.get(f"{honcho.flower}/api/workers", auth=("ops", "wrong"),
                     timeout=10).status_code == 401

    def workers() -> dict[str, Any] | None:
        answer = httpx.get(f"{honcho.flower}/api/workers", params={"refresh": "1"},
                           auth=FLOWER_AUTH, timeout=30)
        assert answer.status_code == 200
        nodes: dict[str, Any] = answer.json()
        queues = {q["name"] for node in nodes.values()
                  for q in (node.get("active_queues") or [])}
        wanted = {honcho.prefix.rstrip(":"), f"procfile-training-{honcho.prefix[9:-1]}"}
        return nodes if wanted <= queues else None

    eventually(workers, "both Procfile workers in Flower", honcho)
