"""The ``sagaline`` command line, run as a real process against the tests' Redis and worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sagaline import EmbeddedRedis, Sagaline
from tests.conftest import DATA_DIR, ROOT, stop_worker
from tests.support.app import app as test_app
from tests.test_order_saga import fresh_shop

ORDER_STEPS = ["create_order", "reserve_inventory", "process_payment", "create_shipment",
               "confirm_order"]


def sagaline(*args: str, env: dict[str, str] | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sagaline.cli --app tests.support.app ARGS`` in the project folder."""
    return subprocess.run(
        [sys.executable, "-m", "sagaline.cli", "--app", "tests.support.app", *args],
        cwd=ROOT, env=env or {**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=timeout,
    )


def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait until ``check()`` holds, or fail."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.02)


def order_input(customer: str, product: str, quantity: int = 1, total: str = "20.00") -> str:
    return json.dumps({"customer_id": customer, "total_amount": total,
                       "items": [{"product_id": product, "quantity": quantity}]})


def run_order(quantity: int = 1, total: str = "20.00") -> subprocess.CompletedProcess[str]:
    customer, product = fresh_shop(balance_cents=10_000)
    return sagaline("run", "order_processing", "--input", order_input(customer, product,
                    quantity, total), "--wait", "--timeout", "30", "--json")


@pytest.fixture(scope="module")
def completed(worker: Any) -> dict[str, Any]:
    """The JSON ``run --wait --json`` printed for an order that completed."""
    result = run_order()
    assert result.returncode == 0, result.stderr
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def test_help_needs_no_app_and_no_redis() -> None:
    """``sagaline --help`` works even when the app module does not exist."""
    result = subprocess.run(
        [sys.executable, "-m", "sagaline.cli", "--app", "no_such_app", "--help"], cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0
    assert all(command in result.stdout for command in ("worker", "run", "status", "list",
                                                         "demo"))


def test_run_wait_json_prints_the_completed_saga_and_exits_0(completed: dict[str, Any]) -> None:
    """An order that goes through prints its summary JSON, completed, and exits 0."""
    assert completed["status"] == "completed"
    assert completed["name"] == "order_processing"
    assert uuid.UUID(completed["saga_id"]) and uuid.UUID(completed["correlation_id"])
    assert set(completed["result"]) == {"order_id", "payment_id", "shipment_id"}
    assert completed["error"] is None
    assert completed["compensations"] == []
    assert [(s["name"], s["status"], s["attempts"]) for s in completed["steps"]] == [
        (name, "completed", 1) for name in ORDER_STEPS
    ]


def test_run_of_an_order_over_the_balance_exits_1_with_its_compensations_in_order(
    worker: Any,
) -> None:
    """A payment over the balance compensates the order, and the command exits 1."""
    result = run_order(total="999.99")

    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "compensated"
    assert summary["failed_step"] == "process_payment"
    assert summary["compensations"] == ["release_inventory", "cancel_order"]
    assert "999.99 asked" in summary["error"]["message"]


def test_run_without_wait_prints_the_started_saga_and_exits_0(
    worker: Any, engine: Sagaline
) -> None:
    """Without --wait the command returns at once with the saga's ids."""
    customer, product = fresh_shop(balance_cents=10_000)
    given = str(uuid.uuid4())
    result = sagaline("run", "order_processing", "--input", order_input(customer, product),
                      "--correlation-id", given, "--json")

    assert result.returncode == 0, result.stderr
    started = json.loads(result.stdout)
    assert started["correlation_id"] == given
    assert engine.wait(started["saga_id"], 30).status == "completed"


def test_invalid_input_exits_2_naming_the_field_and_records_nothing(engine: Sagaline) -> None:
    """A quantity of 0 is refused with the field's path, and no saga is recorded."""
    before = engine.store.list_ids(limit=1000)
    customer, product = fresh_shop(balance_cents=10_000)

    result = sagaline("run", "order_processing", "--input",
                      order_input(customer, product, quantity=0), "--wait")

    assert result.returncode == 2
    assert "items.0.quantity" in result.stderr
    assert result.stdout == ""
    assert engine.store.list_ids(limit=1000) == before


@pytest.mark.parametrize("given", ["{not json", "[1, 2]"])
def test_input_that_is_not_a_json_object_exits_2(given: str) -> None:
    """Inputs must be a JSON object."""
    result = sagaline("run", "order_processing", "--input", given)
    assert result.returncode == 2
    assert "--input" in result.stderr


def test_an_unknown_saga_exits_2_naming_the_known_ones() -> None:
    """Starting a saga nobody registered is bad usage; the message lists the known sagas."""
    result = sagaline("run", "no_such_saga", "--input", "{}")
    assert result.returncode == 2
    assert "no_such_saga" in result.stderr and "order_processing" in result.stderr


def test_a_correlation_id_that_is_not_a_uuid_exits_2(engine: Sagaline) -> None:
    """A malformed correlation id is refused before anything is recorded."""
    customer, product = fresh_shop(balance_cents=10_000)
    before = engine.store.list_ids(limit=1000)
    queued = engine.store.client.llen("celery")
    result = sagaline("run", "order_processing", "--input", order_input(customer, product),
                      "--correlation-id", "order-42")
    assert result.returncode == 2
    assert "not a UUID" in result.stderr
    assert engine.store.list_ids(limit=1000) == before
    assert engine.store.client.llen("celery") == queued


def test_status_json_round_trips_what_run_printed(completed: dict[str, Any]) -> None:
    """``status ID --json`` prints the same summary ``run --wait --json`` did."""
    result = sagaline("status", completed["saga_id"], "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == completed


def test_status_shows_the_steps_in_a_table(completed: dict[str, Any]) -> None:
    """Without --json, status shows the saga and each step with its status."""
    result = sagaline("status", completed["saga_id"])
    assert result.returncode == 0, result.stderr
    assert completed["saga_id"] in result.stdout
    rows = {}
    for line in result.stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 6 and cells[1] in ORDER_STEPS:
            rows[cells[1]] = cells
    # number, step, status, attempts, compensation's status ("—": it has none), attempts
    assert rows == {
        name: [str(n), name, "completed", "1",
               "—" if name == "confirm_order" else "pending", "" if name == "confirm_order"
               else "0"]
        for n, name in enumerate(ORDER_STEPS, start=1)
    }, result.stdout


def test_status_of_an_unknown_id_exits_1() -> None:
    """An id nobody recorded is reported as not found."""
    result = sagaline("status", str(uuid.uuid4()))
    assert result.returncode == 1
    assert "no saga" in result.stderr


def test_list_completed_json_contains_a_saga_just_completed(completed: dict[str, Any]) -> None:
    """``list --status completed --json`` includes the order that just completed."""
    result = sagaline("list", "--status", "completed", "--limit", "50", "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert completed["saga_id"] in [s["saga_id"] for s in listed]
    assert {s["status"] for s in listed} == {"completed"}


def test_list_with_an_unknown_status_exits_2_naming_the_allowed_ones() -> None:
    """A status that does not exist is bad usage; the message names the real ones."""
    result = sagaline("list", "--status", "bogus")
    assert result.returncode == 2
    assert "compensated" in result.stderr and "running" in result.stderr


def test_the_worker_command_runs_a_worker_that_answers_a_ping(engine: Sagaline) -> None:
    """``sagaline worker`` becomes a Celery worker of the app, stopped warmly by SIGTERM."""
    node = f"cli-{uuid.uuid4().hex[:8]}"
    with open(DATA_DIR / f"{node}.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "sagaline.cli", "--app", "tests.support.app", "worker",
             "-c", "1", "-l", "warning", "-Q", f"{node}-queue", "-n", f"{node}@%h"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not any(node in host for reply in test_app.control.ping(timeout=0.5)
                      for host in reply):
            assert process.poll() is None, f"the worker exited; see {log.name}"
            assert time.monotonic() < deadline, f"no answer; see {log.name}"
    finally:
        stop_worker(process)
    assert process.returncode == 0


def processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that contain ``text`` (Linux /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in line:
            found.append(line)
    return found


def test_demo_on_a_fresh_data_dir_runs_every_scenario_and_stops_what_it_started(
    tmp_path: Path,
) -> None:
    """``sagaline demo`` with nothing configured starts its own Redis and worker, prints
    each step and compensation as it happens, and stops both at the end.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGALINE_")}
    env.update(PYTHONPATH=str(ROOT), SAGALINE_DATA_DIR=str(tmp_path))

    result = subprocess.run([sys.executable, "-m", "sagaline.cli", "demo"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)

    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "10 of 10 scenarios ended as expected" in out
    live = ["✗ process_payment failed: CUST-123: 150.00 asked",
            "⤷ process_payment gave up: trying its fallback",
            "✓ process_payment (fallback) completed",
            "✗ process_payment failed: CUST-123: 999.99 asked",
            "✗ process_payment (fallback) failed: CUST-123: 999.99 asked, the backup card "
            "allows 50.00",
            "↺ release_inventory (compensation) completed",
            "↺ cancel_order (compensation) completed",
            "✓ group book_stay completed",
            "✗ rent_car failed",
            "↺ cancel_flight (compensation) completed"]
    positions = [out.find(line) for line in live]
    assert -1 not in positions and positions == sorted(positions), out
    assert "compensations, in order: release_inventory, cancel_order" in out
    # The hotel is booked at the same time as the car: it is cancelled if it was booked.
    assert ("compensations, in order: cancel_hotel, cancel_flight" in out
            or "compensations, in order: cancel_flight" in out)
    thunderline = ["✓ send_magic_link completed", f"written to {tmp_path / 'outbox'}",
                   "X-Correlation-ID: ", "token=", "…(masked)",
                   "✗ provision_vault failed: storage 'default' has 0 GiB free",
                   "↺ delete_user (compensation) completed",
                   "↺ revoke_token (compensation) completed",
                   "0 users, 0 live tokens, 0 vaults, 0 memberships",
                   "✓ sync_adapters completed",
                   "✗ policy_check failed: policy_check waited for signal 'approval'"]
    positions = [out.find(line) for line in thunderline]
    assert -1 not in positions and positions == sorted(positions), out
    assert "approvals:ranking: snapshot ranking-" in out
    mails = list((tmp_path / "outbox").glob("*.eml"))
    assert len(mails) == 1  # written to the outbox folder: no SMTP server is configured
    assert "/auth/magic-link?token=" in mails[0].read_text()
    assert not EmbeddedRedis(tmp_path / "redis").is_running()
    node = next(w for w in out.split() if w.startswith("demo-"))
    assert processes_mentioning(node) == []


# -- supervision --------------------------------------------------------------------------


@pytest.mark.usefixtures("worker")
def test_cancel_stops_a_running_saga_and_waits_for_its_undo(engine: Sagaline) -> None:
    """``sagaline cancel ID --wait`` exits 0 once the saga is cancelled and undone."""
    handle = engine.start("t_cancellable", {"tag": f"cli-{uuid.uuid4().hex}"})
    wait_until(lambda: handle.get().waiting_on == "action:long")

    result = sagaline("cancel", handle.saga_id, "--wait", "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"saga_id": handle.saga_id, "status": "cancelled"}
    run = engine.get(handle.saga_id)
    assert run.status.value == "cancelled"
    # first completed and is undone; long was stopped (not undone); after never started
    assert [t.step for t in run.log if t.event == "compensation.completed"] == ["first"]
    assert run.compensations == ["undo"]
    assert run.step("long").status.value == "failed"
    assert run.step("after").status.value == "pending"


@pytest.mark.usefixtures("worker")
def test_cancel_of_a_finished_saga_exits_1_and_changes_nothing(engine: Sagaline) -> None:
    run = engine.start("t_slow_start", {"tag": f"cli-{uuid.uuid4().hex}"}).wait(30)

    result = sagaline("cancel", run.saga_id, "--json")

    assert result.returncode == 1
    assert json.loads(result.stdout)["status"] == "completed"
    after = engine.get(run.saga_id)
    assert after.status.value == "completed"
    assert after.cancel_requested is False
    assert not any(t.event.startswith("compensation.") for t in after.log)
    assert after.log == run.log


@pytest.mark.usefixtures("main_worker_paused")
def test_stuck_and_recover_in_json_show_and_stop_a_saga_past_its_deadline(
    engine: Sagaline,
) -> None:
    """No worker takes messages; a saga with a 1 s deadline waits on its first step. Past
    the deadline, ``stuck --json`` lists it with what it waits on and its deadline; one
    ``recover --json`` sweep stops it (counted under ``deadline``): it ends compensated,
    its error a DeadlineExceededError, and is no longer stuck.
    """
    handle = engine.start("t_with_deadline", {"tag": f"cli-{uuid.uuid4().hex}"})
    deadline_at = handle.get().deadline_at
    assert deadline_at is not None
    wait_until(lambda: time.time() > deadline_at.timestamp())

    stuck = sagaline("stuck", "--json")
    swept = sagaline("recover", "--json")
    after = sagaline("stuck", "--json")

    assert stuck.returncode == 0 and swept.returncode == 0 and after.returncode == 0
    listed = {s["saga_id"]: s for s in json.loads(stuck.stdout)}
    assert handle.saga_id in listed, stuck.stdout
    mine = listed[handle.saga_id]
    assert (mine["name"], mine["status"], mine["waiting_on"]) == (
        "t_with_deadline", "running", "action:first")
    assert mine["overdue_s"] > 0
    assert mine["deadline_at"] is not None
    assert abs(datetime.fromisoformat(mine["deadline_at"]).timestamp()
               - deadline_at.timestamp()) < 0.01
    assert set(mine) == {"saga_id", "name", "status", "waiting_on", "overdue_s",
                         "deadline_at", "recoveries"}
    counts = json.loads(swept.stdout)
    assert counts.get("deadline", 0) >= 1, counts
    assert all(isinstance(v, int) and v > 0 for v in counts.values()), counts
    run = engine.get(handle.saga_id)
    assert run.status.value == "compensated"
    assert run.error is not None and run.error.type.endswith("DeadlineExceededError")
    assert run.step("first").attempts == 0
    assert handle.saga_id not in [s["saga_id"] for s in json.loads(after.stdout)]


@pytest.mark.usefixtures("worker")
def test_recover_stuck_and_dead_letters_report_in_json(engine: Sagaline) -> None:
    """The operator's views: dead-lettered compensations (here one whose compensation
    keeps failing, then is retried from the CLI); a sweep that finds nothing of this saga
    to do reports counts only; a compensation_failed saga is not stuck.
    """
    from sagaline import Role

    customer, product = fresh_shop(balance_cents=10_000)
    engine.store.inject_fault("order_processing", "confirm_order")
    engine.store.inject_fault("order_processing", "create_order", Role.COMPENSATION)
    run = engine.start("order_processing", json.loads(order_input(customer, product))).wait(60)
    assert run.status.value == "compensation_failed"

    letters = sagaline("dead-letters", "--json")
    swept = sagaline("recover", "--json")
    stuck = sagaline("stuck", "--json")
    engine.store.clear_faults()
    retried = sagaline("retry-compensation", run.saga_id, "--wait")

    assert letters.returncode == 0 and swept.returncode == 0 and stuck.returncode == 0
    mine = [d for d in json.loads(letters.stdout) if d["saga_id"] == run.saga_id]
    assert [(d["step"], d["attempts"]) for d in mine] == [("create_order", 5)]
    counts = json.loads(swept.stdout)
    assert isinstance(counts, dict)
    assert all(isinstance(v, int) and v > 0 for v in counts.values()), counts
    assert run.saga_id not in [s["saga_id"] for s in json.loads(stuck.stdout)]
    assert retried.returncode == 0, retried.stderr
    assert "retrying: create_order" in retried.stdout
    assert engine.get(run.saga_id).status.value == "compensated"
