"""Chaos: sagas keep their promises while workers are killed and Redis restarts."""

from __future__ import annotations

import random
import threading
import time

import pytest
from sqlalchemy import func, select

from sagaline import Sagaline, SagaRun, SagaStatus
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
                assert run.status is SagaStatus.COMPENSATED, (run.saga_id, run.status)
                assert set(orders) <= {"cancelled"} and set(payments) <= {"refunded"}
                assert set(shipments) <= {"cancelled"} and held == 0


@pytest.mark.usefixtures("main_worker_paused")
def test_a_hundred_orders_survive_workers_killed_at_random(engine: Sagaline) -> None:
    """100 order sagas; a worker (all its processes) is SIGKILLed at random moments four
    times and a new one started each time; beat runs the recovery sweep. Every saga ends,
    none is missing, and the rows show each effect applied once or undone.
    """
    customer, product = fresh_shop(stock=170, balance_cents=1_000_000)
    rng = random.Random(7)
    beat = start_beat()
    workers = [start_worker("chaos-0")]
    orders = [
        {"customer_id": customer,
         "items": [{"product_id": product, "quantity": rng.randint(1, 3)}],
         "total_amount": f"{rng.randint(10, 90)}.{rng.randint(0, 99):02d}"}
        for _ in range(100)
    ]
    ids: list[str] = []

    def start_all() -> None:
        for inputs in orders:
            ids.append(engine.start("order_processing", inputs).saga_id)
            time.sleep(rng.uniform(0, 0.03))

    starter = threading.Thread(target=start_all)
    started = time.monotonic()
    try:
        starter.start()
        for kill in range(4):
            time.sleep(rng.uniform(0.5, 2.0))
            kill_group(workers[-1])
            workers.append(start_worker(f"chaos-{kill + 1}"))
        starter.join()
        runs = wait_all_final(engine, ids, timeout=240)
    finally:
        kill_group(beat)
        for worker in workers:
            kill_group(worker)
    elapsed = time.monotonic() - started

    assert len(set(ids)) == 100
    assert all(r.is_final for r in runs), [r.status for r in runs if not r.is_final]
    check_books(runs, customer, product, stock=170, balance=1_000_000)
    recovered = sum(any(t.event == "saga.recovering" for t in r.log) for r in runs)
    print(f"\nchaos: 100 sagas, 4 SIGKILLs, all final in {elapsed:.1f} s; "
          f"{recovered} recovered by the sweep; "
          f"{sum(r.status is SagaStatus.COMPLETED for r in runs)} completed")


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
    order sagas run; workers reconnect (or are restarted by their supervisor), beat's sweep
    drives on what was in flight, and all 50 end in a final state with the books balanced.
    """
    if not STARTED_EMBEDDED:
        pytest.fail("this test restarts the embedded Redis; unset SAGALINE_REDIS_URL")
    customer, product = fresh_shop(stock=200, balance_cents=1_000_000)
    worker.stop()
    workers = SupervisedWorkers("restart", 2)
    beat = start_beat()
    try:
        ids = [engine.start("order_processing", {
            "customer_id": customer, "items": [{"product_id": product, "quantity": 1}],
            "total_amount": "10.00"}).saga_id for _ in range(50)]
        time.sleep(0.3)
        EMBEDDED.stop()
        time.sleep(1.0)
        EMBEDDED.start()
        runs = wait_all_final(engine, ids, timeout=180)
    finally:
        kill_group(beat)
        workers.stop()
        reset_broker_connections()  # this process's pooled ones died with the server
        worker.restart()

    assert len(runs) == 50
    assert all(r.is_final for r in runs), [r.status for r in runs if not r.is_final]
    check_books(runs, customer, product, stock=200, balance=1_000_000)
    print(f"\nredis restart: 50 sagas final; supervised worker restarts: {workers.restarts}")
