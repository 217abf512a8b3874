"""Flower, as a real process against the tests' Redis and worker, read through its HTTP API.

Every saga task must end in Flower in a state that says what happened: SUCCESS, FAILURE,
RETRY while it waits to run again, PROGRESS while it reports progress; REVOKED for a
message dropped without running anything. None may stay STARTED once its saga ended.
Every message of one operation has the same task id (``{saga}-{step}``, ``-fallback``,
``-undo``), so Flower shows one task per operation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from sagaline import Sagaline, SagaStatus
from tests.conftest import DATA_DIR, ROOT, STARTED
from tests.support.flower import (
    CREDENTIALS,
    FINAL_STATES,
    USER,
    Flower,
    sagaline_flower,
    start_flower,
)
from tests.support.postgres import free_port
from tests.support.steps import gate_key
from tests.test_order_saga import fresh_shop, order

pytestmark = pytest.mark.usefixtures("worker")

TEST_ENV = {"PYTHONPATH": str(ROOT), "SAGALINE_FLOWER_BASIC_AUTH": CREDENTIALS}


@pytest.fixture(scope="module")
def flower(worker: Any, engine: Sagaline) -> Iterator[Flower]:
    """``sagaline flower`` for the test app, watching task events before any test starts."""
    port = free_port()
    process = start_flower(
        sagaline_flower("tests.support.app", f"--port={port}", "--address=127.0.0.1"), port,
        cwd=ROOT, log=DATA_DIR / "flower.log", env=TEST_ENV, started=STARTED)
    process.wait_until_watching(
        lambda: engine.start("t_quick", {"tag": "flower-probe"}).saga_id + "-only")
    yield process
    process.stop()


def states(saga_id: str, tasks: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Each task's state, by its id without the saga's id (``first``, ``first-undo``...)."""
    return {task_id[len(saga_id) + 1:]: task["state"] for task_id, task in tasks.items()}


def test_the_api_refuses_a_request_without_the_right_credentials(flower: Flower) -> None:
    """No credentials, or wrong ones: 401; the configured user and password: 200."""
    assert flower.get("/api/tasks", credentials=None)[0] == 401
    assert flower.get("/api/tasks", credentials=f"{USER}:wrong")[0] == 401
    assert flower.get("/api/tasks?limit=1")[0] == 200


def test_a_step_that_succeeds_shows_success_under_its_own_task_name(
    flower: Flower, engine: Sagaline, calls: Any,
) -> None:
    """The only step of t_quick: SUCCESS, named after its saga task, listed under it."""
    handle = engine.start("t_quick", {"tag": calls.tag})
    assert handle.wait(30).status is SagaStatus.COMPLETED

    task = flower.wait_for_state(f"{handle.saga_id}-only", *FINAL_STATES)

    assert task["state"] == "SUCCESS"
    assert task["name"] == "testing.succeed"
    assert f"{handle.saga_id}-only" in flower.tasks(taskname="testing.succeed")


def test_a_step_that_retries_shows_retry_while_it_waits_then_success(
    flower: Flower, engine: Sagaline, calls: Any,
) -> None:
    """Two failed attempts, then success: Flower shows RETRY (with the attempt's error)
    while the message waits for its retry, then SUCCESS, keeping the retries' count, when
    the last retry happened and the last failed attempt's error.
    """
    handle = engine.start("t_retried", {"tag": calls.tag})
    task_id = f"{handle.saga_id}-flaky"

    waiting = flower.wait_for_state(task_id, "RETRY")
    assert "failed on purpose" in waiting["exception"]
    assert handle.wait(30).status is SagaStatus.COMPLETED
    task = flower.wait_for_state(task_id, *FINAL_STATES)

    assert task["state"] == "SUCCESS"
    assert task["retries"] == 2
    assert task["retried"] is not None
    assert "flaky attempt 2 failed on purpose" in task["exception"]
    assert calls.read() == ["flaky:action:1", "flaky:action:2", "flaky:action:3"]


def test_an_action_that_hands_over_to_its_fallback_shows_failure_with_its_error(
    flower: Flower, engine: Sagaline,
) -> None:
    """process_payment over the balance gives up and the backup card pays: the payment's
    task FAILURE with the payment's error, the fallback's SUCCESS under its own name, and
    every other task SUCCESS.
    """
    customer, product = fresh_shop(balance_cents=5_000, backup_cents=20_000)
    handle = engine.start("order_processing", order(customer, product, 1, "150.00"))
    assert handle.wait(30).status is SagaStatus.COMPLETED

    tasks = flower.wait_until_final(handle.saga_id, [
        f"{handle.saga_id}-process_payment", f"{handle.saga_id}-process_payment-fallback",
        f"{handle.saga_id}-confirm_order"])

    payment = tasks[f"{handle.saga_id}-process_payment"]
    assert payment["state"] == "FAILURE"
    assert payment["name"] == "payments.process_payment"
    assert "InsufficientFundsError" in payment["exception"]
    assert "150.00 asked, 50.00 available" in payment["exception"]
    assert payment["traceback"].startswith("Traceback")
    assert "InsufficientFundsError" in payment["traceback"]
    fallback = tasks[f"{handle.saga_id}-process_payment-fallback"]
    assert (fallback["state"], fallback["name"]) == ("SUCCESS", "payments.charge_backup_card")
    assert states(handle.saga_id, tasks) == {
        "create_order": "SUCCESS", "reserve_inventory": "SUCCESS",
        "process_payment": "FAILURE",
        "process_payment-fallback": "SUCCESS",
        "create_shipment": "SUCCESS", "confirm_order": "SUCCESS"}


def test_a_failed_fallback_and_its_rollback_show_failure_then_compensations_success(
    flower: Flower, engine: Sagaline,
) -> None:
    """Over the balance and the backup card: the payment and its fallback FAILURE, the
    compensations of the steps before SUCCESS.
    """
    customer, product = fresh_shop(balance_cents=5_000, backup_cents=20_000)
    handle = engine.start("order_processing", order(customer, product, 1, "250.00"))
    assert handle.wait(30).status is SagaStatus.COMPENSATED

    tasks = flower.wait_until_final(handle.saga_id, [
        f"{handle.saga_id}-create_order-undo", f"{handle.saga_id}-process_payment-fallback"])

    assert states(handle.saga_id, tasks) == {
        "create_order": "SUCCESS", "reserve_inventory": "SUCCESS",
        "process_payment": "FAILURE",
        "process_payment-fallback": "FAILURE",
        "reserve_inventory-undo": "SUCCESS",
        "create_order-undo": "SUCCESS"}
    assert "200.00" in tasks[f"{handle.saga_id}-process_payment-fallback"]["exception"]


def test_a_step_that_fails_without_a_fallback_shows_failure_and_each_compensation_its_end(
    flower: Flower, engine: Sagaline, calls: Any,
) -> None:
    """t_undo_fails: fourth fails for good (FAILURE); second's compensation fails on each
    of its two attempts (FAILURE); first's compensation SUCCESS; third has none.
    """
    handle = engine.start("t_undo_fails", {"tag": calls.tag})
    assert handle.wait(30).status is SagaStatus.COMPENSATION_FAILED

    tasks = flower.wait_until_final(handle.saga_id, [f"{handle.saga_id}-first-undo"])

    assert states(handle.saga_id, tasks) == {
        "first": "SUCCESS", "second": "SUCCESS", "third": "SUCCESS",
        "fourth": "FAILURE", "second-undo": "FAILURE",
        "first-undo": "SUCCESS"}
    assert tasks[f"{handle.saga_id}-first-undo"]["name"] == "testing.undo"
    assert "fourth failed on purpose" in tasks[f"{handle.saga_id}-fourth"]["exception"]


def test_a_step_reporting_progress_shows_progress_with_its_report_then_success(
    flower: Flower, engine: Sagaline, calls: Any,
) -> None:
    """While train holds after its first unit, Flower shows PROGRESS, the report readable
    as JSON in ``result``; once the gate opens, SUCCESS.
    """
    handle = engine.start("t_with_progress", {"tag": calls.tag})
    task_id = f"{handle.saga_id}-train"

    running = flower.wait_for_state(task_id, "PROGRESS")
    report = json.loads(running["result"])
    assert {k: report[k] for k in ("done", "total", "metrics", "step", "saga_id")} == {
        "done": 1, "total": 3, "metrics": {"unit": 1}, "step": "train",
        "saga_id": handle.saga_id}
    assert running["name"] == "testing.progressing"
    engine.store.client.set(gate_key(calls.tag), "1")
    assert handle.wait(30).status is SagaStatus.COMPLETED
    assert flower.wait_for_state(task_id, *FINAL_STATES)["state"] == "SUCCESS"


def test_a_step_that_completes_after_its_saga_was_cancelled_shows_success(
    flower: Flower, engine: Sagaline, calls: Any,
) -> None:
    """The slow step (not cooperative) completes after the cancel: its task SUCCESS, saying so, and
    it is compensated; the step after it never runs.
    """
    handle = engine.start("t_not_cooperative", {"tag": calls.tag})
    flower.wait_for_state(f"{handle.saga_id}-slow", "STARTED")
    engine.cancel(handle.saga_id)
    assert handle.wait(30).status is SagaStatus.CANCELLED

    tasks = flower.wait_until_final(handle.saga_id, [f"{handle.saga_id}-first-undo"])

    assert states(handle.saga_id, tasks) == {
        "first": "SUCCESS", "slow": "SUCCESS", "slow-undo": "SUCCESS",
        "first-undo": "SUCCESS"}
    assert "completed after its saga was stopped" in tasks[f"{handle.saga_id}-slow"]["result"]


@pytest.mark.parametrize(("saga", "expected", "status"), [
    # A branch fails: the group's other branches may be dropped (REVOKED) or run.
    ("t_fan_out", {"b3": {"FAILURE"}, "first-undo": {"SUCCESS"}}, SagaStatus.COMPENSATED),
    # The fallback takes over; the chain's step after it goes on from the fallback.
    ("t_with_fallback", {"pay": {"FAILURE"}, "pay-fallback": {"SUCCESS"},
                         "later": {"SUCCESS"}}, SagaStatus.COMPLETED),
    # The child step's message ends once it started its child saga.
    ("t_parent", {"child": {"SUCCESS"}, "p3": {"SUCCESS"}}, SagaStatus.COMPLETED),
    # The step that adds steps ends the chain; the added ones run after it.
    ("t_dynamic", {"plan": {"SUCCESS"}, "dyn_2": {"SUCCESS"}, "last": {"SUCCESS"}},
     SagaStatus.COMPLETED),
])
def test_no_task_stays_started_once_its_saga_ended(
    flower: Flower, engine: Sagaline, calls: Any, saga: str,
    expected: dict[str, set[str]], status: SagaStatus,
) -> None:
    """Sagas whose messages end in every way the runtime drops one: each task ends."""
    handle = engine.start(saga, {"tag": calls.tag})
    assert handle.wait(60).status is status

    tasks = flower.wait_until_final(handle.saga_id,
                                    [f"{handle.saga_id}-{step}" for step in expected])

    shown = states(handle.saga_id, tasks)
    assert all(shown[step] in allowed for step, allowed in expected.items()), shown
    assert set(shown.values()) <= FINAL_STATES


def test_flower_reads_its_port_from_the_apps_settings(engine: Sagaline) -> None:
    """``sagaline --app config flower`` listens where SAGALINE_FLOWER_PORT says, behind the
    settings' credentials.
    """
    port = free_port()
    process = start_flower(sagaline_flower("config"), port, cwd=ROOT,
                           log=DATA_DIR / "flower-settings.log", started=STARTED,
                           env={**TEST_ENV, "SAGALINE_FLOWER_PORT": str(port),
                                "SAGALINE_FLOWER_ADDRESS": "127.0.0.1"})
    try:
        assert process.get("/api/tasks?limit=1", credentials=None)[0] == 401
        assert process.get("/api/tasks?limit=1")[0] == 200
        assert CREDENTIALS.encode() not in subprocess.run(
            ["ps", "-o", "args=", "-p", str(process.process.pid)], capture_output=True,
            check=False).stdout
    finally:
        process.stop()


@pytest.mark.parametrize(("credentials", "message"), [
    (None, "set SAGALINE_FLOWER_BASIC_AUTH=user:password"),
    ("nobody", "SAGALINE_FLOWER_BASIC_AUTH must be user:password"),
    ("admin:", "SAGALINE_FLOWER_BASIC_AUTH must be user:password"),
])
def test_flower_does_not_start_without_credentials(credentials: str | None,
                                                   message: str) -> None:
    """Without a user and a password, ``sagaline flower`` exits 2 and says what to set."""
    env = {k: v for k, v in os.environ.items() if k != "SAGALINE_FLOWER_BASIC_AUTH"}
    if credentials is not None:
        env["SAGALINE_FLOWER_BASIC_AUTH"] = credentials
    result = subprocess.run(
        [sys.executable, "-m", "sagaline.cli", "--app", "tests.support.app", "flower",
         f"--port={free_port()}"], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60)

    assert result.returncode == 2, result.stderr
    assert message in " ".join(result.stderr.split())


NAS = {"search_space": {"layers": [1, 2], "units": [32, 64]}, "max_trials": 2, "epochs": 4,
       "concurrency": 2, "passes_per_epoch": 20}


@pytest.mark.usefixtures("training_worker")
def test_nas_training_shows_progress_then_success_and_a_failed_run_its_compensations(
    flower: Flower, engine: Sagaline,
) -> None:
    """A NAS search watched in Flower: each training task under its own name, in PROGRESS
    with its epoch readable while it trains, then SUCCESS; a run failing after training shows
    its compensation tasks ending too.
    """
    handle = engine.start("cerebros_nas", NAS)
    train = f"{handle.saga_id}-train_0"
    running = flower.wait_for_state(train, "PROGRESS", timeout=60)
    assert running["name"] == "bolt.nas.train_trial"
    report = json.loads(running["result"])
    assert report["total"] == 4 and 1 <= report["done"] <= 4
    assert "val_accuracy" in report["metrics"]
    assert handle.wait(120).status is SagaStatus.COMPLETED
    assert flower.wait_for_state(train, *FINAL_STATES)["state"] == "SUCCESS"

    engine.store.inject_fault("cerebros_nas", "collect_artifacts", message="store is down")
    failed = engine.start("cerebros_nas", {**NAS, "passes_per_epoch": 1})
    assert failed.wait(120).status is SagaStatus.COMPENSATED
    undo = [f"{failed.saga_id}-train_0-undo", f"{failed.saga_id}-train_1-undo",
            f"{failed.saga_id}-create_model_run-undo"]
    tasks = flower.wait_until_final(failed.saga_id, undo, timeout=60)
    assert {tasks[i]["name"] for i in undo} == {"bolt.nas.discard_trial",
                                               "bolt.nas.mark_run_failed"}
    assert all(tasks[i]["state"] == "SUCCESS" for i in undo)
    assert tasks[f"{failed.saga_id}-collect_artifacts"]["state"] == "FAILURE"
