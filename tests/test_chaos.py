"""Chaos: sagas keep their promises while workers are killed and Redis restarts."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from sagaline import Sagaline, SagaRun, SagaStatus, StepStatus
from tasks.db import database
from tasks.inventory import Product, Reservation
from tasks.orders import Order
from tasks.payments import Account, Payment
from tasks.shipping import Shipment
from tests.conftest import (
    EMBEDDED,
    STARTED_EMBEDDED,
    MainWorker,
    kill_group,
    reset_broker_connections,
    start_beat,
    start_worker,
)
from tests.test_order_saga import fresh_shop

pytestmark = pytest.mark.usefixtures("worker")


def wait_all_final(engine: Sagaline, ids: list[str], timeout: float) -> list[SagaRun]:
    deadline = time.monotonic() + timeout
    while True:
        runs = [engine.get(i) for i in ids]
        if all(r.is_final for r in runs) or time.monotonic() > deadline:
            return runs
        time.sleep(0.5)


def check_books(runs: list[SagaRun], customer: str, product: str, stock: int,
                balance: int) -> None:
    """Every effect matches the outcomes: applied once for each completed saga, undone for
    each compensated one, never twice, never left behind.
    """
    completed = [r for r in runs if r.status is SagaStatus.COMPLETED]
    spent = sum(round(float(r.inputs["total_amount"]) * 100) for r in completed)
    taken = sum(r.inputs["items"][0]["quantity"] for r in completed)
    with database.session() as session:
        assert session.get(Product, product).stock == stock - taken  # type: ignore[union-attr]
        assert session.get(Account, customer).balance_cents == balance - spent  # type: ignore[union-attr]
        for run in runs:
            key = f"{run.saga_id}:%"
            orders = session.scalars(select(Order.status).where(Order.saga_key.like(key))).all()
            payments = session.scalars(
                select(Payment.status).where(Payment.saga_key.like(key))).all()
            shipments = session.scalars(
                select(Shipment.status).where(Shipment.saga_key.like(key))).all()
            held = session.scalar(select(func.coalesce(func.sum(Reservation.quantity), 0)).where(
                Reservation.saga_key.like(key), Reservation.released.is_(False)))
            if run.status is SagaStatus.COMPLETED:
                assert (orders, payments, shipments) == (["confirmed"], ["captured"],
                                                         ["scheduled"]), run.saga_id
                assert held == run.inputs["items"][0]["quantity"]
            else:
                # The only rollback these scenarios explain: the stock ran out. A recovery
                # that rolled a killed saga back (instead of driving it on) fails here.
                assert run.status is SagaStatus.COMPENSATED, (run.saga_id, run.status)
                assert run.failed_step == "reserve_inventory", (run.saga_id, run.error)
                assert run.error is not None and run.error.type.endswith("OutOfStockError")
                assert run.compensations == ["cancel_order"], run.saga_id
                assert (orders, payments, shipments) == (["cancelled"], [], []), run.saga_id
                assert held == 0


def running_since(run: SagaRun, since: float) -> list[str]:
    """The steps of ``run`` whose action runs now, in an attempt begun after ``since``."""
    return [step.name for step in run.steps
            if step.status is StepStatus.RUNNING and step.attempt_times
            and step.attempt_times[-1].timestamp() >= since]


def steps_in_flight(engine: Sagaline, ids: list[str], since: float, *, first: bool = False
                    ) -> tuple[set[tuple[str, str]], bool]:
    """(saga, step) of every action of these sagas running now in an attempt begun after
    ``since`` (with ``first``, return at the first found), and whether any saga is unfinished.
    """
    wanted = set(ids)
    found: set[tuple[str, str]] = set()
    unfinished = False
    for saga_id in engine.store.active_ids():
        if saga_id not in wanted:
            continue
        run = engine.get(saga_id)
        unfinished = unfinished or not run.is_final
        found |= {(saga_id, step) for step in running_since(run, since)}
        if first and found:
            break
    return found, unfinished


@pytest.mark.usefixtures("main_worker_paused")
def test_a_hundred_orders_survive_workers_killed_at_random(engine: Sagaline) -> None:
    """100 order sagas; a worker (all its processes) is SIGKILLed at random moments, each
    time while one of its steps runs, four times (fewer if every saga ended first; more,
    until one kill caught a step mid-way) and a new one started each time; beat runs the
    recovery sweep. Every saga ends, none is missing, each step caught mid-way was
    recovered by the sweep and run again, and the rows show each effect applied once or
    undone (only for want of stock).
    """
    customer, product = fresh_shop(stock=170, balance_cents=1_000_000)
    rng = random.Random(7)
    beat = start_beat()
    began = time.time()
    workers = [start_worker("chaos-0")]
    def order() -> dict[str, object]:
        return {"customer_id": customer,
                "items": [{"product_id": product, "quantity": rng.randint(1, 3)}],
                "total_amount": f"{rng.randint(10, 90)}.{rng.randint(0, 99):02d}"}

    orders = [order() for _ in range(100)]
    ids: list[str] = []

    def start_all(batch: list[dict[str, object]]) -> None:
        for inputs in batch:
            ids.append(engine.start("order_processing", inputs).saga_id)
            time.sleep(rng.uniform(0, 0.03))

    def wait_for_a_step_in_flight(since: float) -> bool:
        """Wait until the live worker runs a step; ``False`` if every saga ended first."""
        deadline = time.monotonic() + 30
        while True:
            running, unfinished = steps_in_flight(engine, list(ids), since, first=True)
            if running:
                return True
            if len(ids) == len(orders) and not unfinished:
                return False
            assert time.monotonic() < deadline, "no step of the worker ran in 30 s"
            time.sleep(0.01)

    caught: set[tuple[str, str]] = set()  # steps whose worker died under them
    kills = 0
    starter = threading.Thread(target=start_all, args=(list(orders),))
    started = time.monotonic()
    try:
        starter.start()
        while (kills < 4 or not caught) and kills < 12:
            time.sleep(rng.uniform(0.2, 1.2))
            if not wait_for_a_step_in_flight(began):
                if caught:
                    break
                # Every saga ended before a kill caught a step mid-way (steps take
                # milliseconds): start another batch and go on killing.
                starter.join()
                more = [order() for _ in range(20)]
                orders.extend(more)
                starter = threading.Thread(target=start_all, args=(more,))
                starter.start()
                continue
            kill_group(workers[-1])
            kills += 1
            # Its worker is dead: what it left running can only end by a recovery.
            caught |= steps_in_flight(engine, list(ids), began)[0]
            began = time.time()
            workers.append(start_worker(f"chaos-{kills}"))
        starter.join()
        runs = wait_all_final(engine, ids, timeout=240)
    finally:
        kill_group(beat)
        for worker in workers:
            kill_group(worker)
    elapsed = time.monotonic() - started

    assert len(set(ids)) == len(orders) >= 100
    assert all(r.is_final for r in runs), [r.status for r in runs if not r.is_final]
    check_books(runs, customer, product, stock=170, balance=1_000_000)
    assert caught, f"none of {kills} kills caught a step mid-way"
    by_id = {r.saga_id: r for r in runs}
    for saga_id, step in caught:
        run = by_id[saga_id]
        assert any(t.event == "saga.recovering" for t in run.log), (saga_id, step)
        assert run.step(step).attempts >= 2, (saga_id, step)  # it ran again after the kill
    recovered = sum(any(t.event == "saga.recovering" for t in r.log) for r in runs)
    assert recovered >= len({saga_id for saga_id, _ in caught})
    completed = sum(r.status is SagaStatus.COMPLETED for r in runs)
    # Stock only goes down here (no completed order gives any back): an order refused for
    # stock wanted more than what is left at the end.
    left = 170 - sum(r.inputs["items"][0]["quantity"] for r in runs
                     if r.status is SagaStatus.COMPLETED)
    assert all(r.inputs["items"][0]["quantity"] > left for r in runs
               if r.status is SagaStatus.COMPENSATED)
    print(f"\nchaos: {len(orders)} sagas, {kills} SIGKILLs ({len(caught)} steps caught "
          "mid-way), all "
          f"final in {elapsed:.1f} s; {recovered} recovered by the sweep; {completed} "
          "completed")


class SupervisedWorkers:
    """Workers kept running as systemd or compose would: one that exits is started again.

    A worker may exit when its broker connection breaks (kombu's Redis transport can fail
    to re-create a channel after the server restarts); a process supervisor restarts it.
    """

    def __init__(self, name: str, count: int) -> None:
        self.name = name
        self.workers = [start_worker(f"{name}-{i}") for i in range(count)]
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            for i, process in enumerate(self.workers):
                if process.poll() is not None:
                    self.restarts += 1
                    try:
                        self.workers[i] = start_worker(f"{self.name}-{i}")
                    except Exception:
                        continue

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        for process in self.workers:
            kill_group(process)


@pytest.mark.disruptive
def test_a_redis_restart_in_the_middle_of_fifty_sagas_loses_none(
    engine: Sagaline, worker: MainWorker
) -> None:
    """The embedded Redis (append-only file on) is shut down and started again while 50
    order sagas run, once some have completed a step and most have not ended; workers
    reconnect (or are restarted by their supervisor), beat's sweep drives on what was in
    flight, and all 50 complete (there is stock and money for all) with the books balanced.
    """
    if not STARTED_EMBEDDED:
        pytest.fail("this test restarts the embedded Redis; unset SAGALINE_REDIS_URL")
    customer, product = fresh_shop(stock=200, balance_cents=1_000_000)
    worker.stop()
    workers = SupervisedWorkers("restart", 2)
    beat = start_beat()

    def mid_way(ids: list[str]) -> bool:
        runs = [engine.get(i) for i in ids]
        progressed = sum(any(t.event == "action.completed" for t in r.log) for r in runs)
        return progressed >= 1 and sum(not r.is_final for r in runs) >= 25

    try:
        ids = [engine.start("order_processing", {
            "customer_id": customer, "items": [{"product_id": product, "quantity": 1}],
            "total_amount": "10.00"}).saga_id for _ in range(50)]
        deadline = time.monotonic() + 60
        while not mid_way(ids):
            assert time.monotonic() < deadline, "the sagas made no progress in 60 s"
            time.sleep(0.02)
        stopped_at = datetime.now(UTC)
        EMBEDDED.stop()
        time.sleep(1.0)  # Redis stays down a moment
        EMBEDDED.start()
        restarted_at = datetime.now(UTC)
        runs = wait_all_final(engine, ids, timeout=180)
    finally:
        kill_group(beat)
        workers.stop()
        reset_broker_connections()  # this process's pooled ones died with the server
        worker.restart()

    assert len(runs) == 50
    assert [r.status for r in runs] == [SagaStatus.COMPLETED] * 50, [
        (r.saga_id, r.status.value, r.failed_step, r.error) for r in runs
        if r.status is not SagaStatus.COMPLETED]
    check_books(runs, customer, product, stock=200, balance=1_000_000)
    # In flight at the restart: a step completed before Redis went down, the end after.
    in_flight = [r for r in runs
                 if any(t.event == "action.completed" and t.at < stopped_at for t in r.log)
                 and r.ended_at is not None and r.ended_at > restarted_at]
    assert in_flight, "no saga was in flight when Redis restarted"
    print(f"\nredis restart: 50 sagas completed, {len(in_flight)} in flight at the restart; "
          f"supervised worker restarts: {workers.restarts}")
