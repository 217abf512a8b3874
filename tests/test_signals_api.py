"""Signals from outside, for real: ``POST /sagas/{id}/signals/{name}`` on ``sagaline api``
and ``sagaline signal``, each a process of its own, with the session's worker running UPM
activation on SQLite. Crown waits for approvals; approvers send them over HTTP or the CLI.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from sagaline import Sagaline, SagaStatus, StepStatus
from tasks.block.models import ACTIVE
from tasks.crown.models import ApprovalRule
from tasks.db import database
from tests.conftest import ROOT, pause_main_worker
from tests.support.thunderline import Family, family_state, new_family
from tests.test_upm_activation import SAGA

UNKNOWN_ID = "0190f5e8-7c3a-7b21-9d4e-5f6a7b8c9d0e"


@pytest.fixture
def family(worker: Any) -> Family:
    """A fresh UPM family on SQLite whose snapshots need two distinct approvers."""
    made = new_family(database)
    with database.session() as session:
        session.add(ApprovalRule(family=made.name, required=2))
    return made


def waiting(engine: Sagaline, saga_id: str, waits: int = 1, timeout: float = 30) -> None:
    """Wait until policy_check has waited ``waits`` times and waits now."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = engine.get(saga_id)
        count = sum(1 for t in run.log if t.event == "action.waiting")
        if count >= waits and run.step("policy_check").status is StepStatus.WAITING:
            return
        time.sleep(0.05)
    raise AssertionError(f"policy_check of {saga_id} did not wait {waits} times")


def signal_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``sagaline --app tests.support.app signal ...`` as a process of its own."""
    return subprocess.run([sys.executable, "-m", "sagaline.cli", "--app", "tests.support.app",
                           "signal", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_approvals_sent_over_http_complete_the_activation(
        client: httpx.Client, engine: Sagaline, family: Family) -> None:
    """Started over HTTP, the activation waits at Crown; an approval is ``delivered``, the
    same one again a ``duplicate``; the second approver's completes it.
    """
    response = client.post(f"/sagas/{SAGA}", json={"snapshot_id": family.shadow})
    assert response.status_code == 202, response.text
    saga_id = response.json()["saga_id"]
    waiting(engine, saga_id)
    shown = client.get(f"/sagas/{saga_id}").json()
    step = next(s for s in shown["steps"] if s["name"] == "policy_check")
    assert (step["status"], step["signal"]) == ("waiting", "approval")
    assert step["wait_until"]

    first = client.post(f"/sagas/{saga_id}/signals/approval", json={"approver": "ada"})
    assert first.status_code == 202, first.text
    assert first.json() == {"saga_id": saga_id, "signal": "approval", "outcome": "delivered",
                            "received": 1, "woken": ["policy_check"]}
    waiting(engine, saga_id, waits=2)
    again = client.post(f"/sagas/{saga_id}/signals/approval", json={"approver": "ada"})
    assert (again.status_code, again.json()["outcome"]) == (202, "duplicate")
    assert client.post(f"/sagas/{saga_id}/signals/approval",
                       json={"approver": "grace"}).json()["outcome"] == "delivered"

    run = engine.wait(saga_id, 60)
    assert run.status is SagaStatus.COMPLETED, run.error
    assert family_state(database, family)["snapshots"][family.shadow] == ACTIVE
    ended = client.post(f"/sagas/{saga_id}/signals/approval", json={"approver": "joan"})
    assert ended.status_code == 409
    assert "only a running saga takes signals" in ended.json()["detail"]


def test_signals_sent_before_the_step_are_kept_and_the_cli_sends_them(
        engine: Sagaline, family: Family) -> None:
    """Both approvals come (from ``sagaline signal``) while the saga's first message is
    still queued (the worker takes none meanwhile): they are kept, and Crown never waits.
    """
    with pause_main_worker():
        handle = engine.start(SAGA, {"snapshot_id": family.shadow})
        for approver in ("ada", "grace"):
            sent = signal_cli(handle.saga_id, "approval", "--payload",
                              json.dumps({"approver": approver}), "--json")
            assert sent.returncode == 0, sent.stderr
            assert json.loads(sent.stdout)["outcome"] == "kept"
        assert engine.get(handle.saga_id).step("load_snapshot").status is StepStatus.PENDING
    run = handle.wait(60)
    assert run.status is SagaStatus.COMPLETED, run.error
    assert "action.waiting" not in [t.event for t in run.log]
    assert run.step("policy_check").attempts == 1


def test_a_bad_signal_is_refused_naming_the_field(client: httpx.Client, engine: Sagaline,
                                                  family: Family) -> None:
    """A bad name or a payload that is not an object: 422 naming it, nothing kept; an
    unknown saga: 404; the CLI says the same with exit codes 2 and 1.
    """
    handle = engine.start(SAGA, {"snapshot_id": family.shadow})
    bad_name = client.post(f"/sagas/{handle.saga_id}/signals/no%20space", json={})
    assert bad_name.status_code == 422
    assert [e["field"] for e in bad_name.json()["errors"]] == ["name"]
    not_object = client.post(f"/sagas/{handle.saga_id}/signals/approval", json=[1, 2])
    assert not_object.status_code == 422
    assert client.post(f"/sagas/{UNKNOWN_ID}/signals/approval", json={}).status_code == 404
    assert "signal.received" not in [t.event for t in engine.get(handle.saga_id).log]

    payload = signal_cli(handle.saga_id, "approval", "--payload", "[1]")
    assert payload.returncode == 2
    assert "payload: must be a JSON object" in payload.stderr
    unknown = signal_cli(UNKNOWN_ID, "approval")
    assert unknown.returncode == 1
    assert "no saga" in unknown.stderr
    engine.cancel(handle.saga_id)
    assert engine.wait(handle.saga_id, 60).status is SagaStatus.CANCELLED
