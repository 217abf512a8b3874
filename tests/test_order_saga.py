"""The order processing saga end to end: a real worker, real Redis, real SQL rows."""

from __future__ import annotations

import itertools
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select

from sagaline import Role, Sagaline, SagaRun, SagaStatus, StepStatus
from tasks.db import database
from tasks.inventory import Product, Reservation
from tasks.orders import Customer, Order
from tasks.payments import Account, BackupCard, BackupCharge, Payment
from tasks.shipping import Shipment

pytestmark = pytest.mark.usefixtures("worker")

STEPS = ["create_order", "reserve_inventory", "process_payment", "create_shipment",
         "confirm_order"]
UNDO = {"create_order": "cancel_order", "reserve_inventory": "release_inventory",
        "process_payment": "refund_payment", "create_shipment": "cancel_shipment"}


def fresh_shop(stock: int = 10, balance_cents: int = 50_000,
               backup_cents: int | None = None) -> tuple[str, str]:
    """A customer and a product of this test's own, so tests never share rows; the
    customer has a backup card only when ``backup_cents`` is given.
    """
    suffix = uuid.uuid4().hex[:8]
    customer, product = f"CUST-{suffix}", f"PROD-{suffix}"
    with database.session() as session:
        session.add(Customer(id=customer, name="Test Customer"))
        session.add(Account(customer_id=customer, balance_cents=balance_cents))
        session.add(Product(id=product, stock=stock))
        if backup_cents is not None:
            session.add(BackupCard(customer_id=customer, available_cents=backup_cents))
    return customer, product


def backup_card(customer: str) -> dict[str, Any]:
    with database.session() as session:
        return {
            "available": session.get(BackupCard, customer).available_cents,  # type: ignore[union-attr]
            "charges": [c.status for c in session.scalars(
                select(BackupCharge).where(BackupCharge.customer_id == customer)
                .order_by(BackupCharge.id))],
        }


def order(customer: str, product: str, quantity: int = 2, total: str = "99.99") -> dict[str, Any]:
    return {"customer_id": customer, "items": [{"product_id": product, "quantity": quantity}],
            "total_amount": total}


def rows(customer: str, product: str) -> dict[str, Any]:
    with database.session() as session:
        return {
            "stock": session.get(Product, product).stock,  # type: ignore[union-attr]
            "balance": session.get(Account, customer).balance_cents,  # type: ignore[union-attr]
            "orders": [o.status for o in session.scalars(
                select(Order).where(Order.customer_id == customer).order_by(Order.id))],
            "payments": [p.status for p in session.scalars(
                select(Payment).where(Payment.customer_id == customer).order_by(Payment.id))],
            "reservations": [r.released for r in session.scalars(
                select(Reservation).where(Reservation.product_id == product))],
        }


def shipments_for(run: SagaRun) -> list[str]:
    with database.session() as session:
        return [s.status for s in session.scalars(
            select(Shipment).where(Shipment.saga_key.startswith(run.saga_id)))]


def test_order_saga_completes_and_every_row_shows_it(engine: Sagaline) -> None:
    """Given stock and money, when an order runs, it completes with every effect in place."""
    customer, product = fresh_shop(stock=10, balance_cents=50_000)

    run = engine.start("order_processing", order(customer, product, 2, "99.99")).wait(30)

    assert run.status is SagaStatus.COMPLETED
    assert [s.status for s in run.steps] == [StepStatus.COMPLETED] * 5
    assert set(run.result) == {"order_id", "payment_id", "shipment_id"}
    assert run.compensations == []
    assert rows(customer, product) == {
        "stock": 8, "balance": 50_000 - 9_999, "orders": ["confirmed"],
        "payments": ["captured"], "reservations": [False],
    }
    assert shipments_for(run) == ["scheduled"]


@pytest.mark.parametrize("failing", STEPS)
def test_failure_at_each_step_undoes_completed_steps_in_reverse(
    engine: Sagaline, failing: str
) -> None:
    """When step N fails for good, exactly the compensations of steps 1..N-1 run, last
    first, once each, and the rows are as before the saga.
    """
    customer, product = fresh_shop(stock=10, balance_cents=50_000)
    engine.store.inject_fault("order_processing", failing, message=f"{failing} is down")

    run = engine.start("order_processing", order(customer, product, 2, "99.99")).wait(30)

    done = STEPS[: STEPS.index(failing)]
    expected = [UNDO[s] for s in reversed(done) if s in UNDO]
    assert run.status is SagaStatus.COMPENSATED
    assert run.failed_step == failing
    assert run.error is not None and run.error.message == f"{failing} is down"
    assert run.compensations == expected
    undo_started = [t.step for t in run.log if t.event == "compensation.started"]
    assert undo_started == [s for s in reversed(done) if s in UNDO]
    for step in run.steps:
        if step.name in done and step.compensation is not None:
            assert step.compensation.status is StepStatus.COMPLETED
            assert step.compensation.attempts == 1
    assert run.step(failing).status is StepStatus.FAILED
    if failing in UNDO:
        # The failed step is not compensated: its action never completed.
        assert run.step(failing).compensation is None or (
            run.step(failing).compensation.status is StepStatus.PENDING  # type: ignore[union-attr]
        )
    after = rows(customer, product)
    assert after["stock"] == 10
    assert after["balance"] == 50_000
    assert after["orders"] == ([] if failing == "create_order" else ["cancelled"])
    assert all(after["reservations"])
    assert all(p == "refunded" for p in after["payments"])
    assert all(s == "cancelled" for s in shipments_for(run))


def test_short_stock_fails_reservation_without_retry(engine: Sagaline) -> None:
    """An order for more than is in stock fails at reserve_inventory, once, and is undone."""
    customer, product = fresh_shop(stock=1)

    run = engine.start("order_processing", order(customer, product, 2)).wait(30)

    assert run.status is SagaStatus.COMPENSATED
    assert run.failed_step == "reserve_inventory"
    assert run.step("reserve_inventory").attempts == 1
    assert run.error is not None and run.error.type.endswith("OutOfStockError")
    assert run.compensations == ["cancel_order"]
    assert rows(customer, product)["stock"] == 1


def test_payment_over_balance_fails_without_retry_and_is_undone(engine: Sagaline) -> None:
    """A total above the balance fails at process_payment, once; stock and order are undone."""
    customer, product = fresh_shop(stock=10, balance_cents=500)

    run = engine.start("order_processing", order(customer, product, 1, "50.00")).wait(30)

    assert run.status is SagaStatus.COMPENSATED
    assert run.failed_step == "process_payment"
    assert run.step("process_payment").attempts == 1
    assert run.error is not None and run.error.retryable is False
    assert run.error.details["balance_cents"] == 500
    assert run.compensations == ["release_inventory", "cancel_order"]
    assert rows(customer, product) == {"stock": 10, "balance": 500, "orders": ["cancelled"],
                                       "payments": [], "reservations": [True]}


def test_unknown_customer_is_not_retried_though_the_step_retries(engine: Sagaline) -> None:
    """create_order retries transient errors, but a NonRetryableError fails it at once."""
    run = engine.start("order_processing", order("CUST-NOBODY", "PROD-1")).wait(30)

    assert run.status is SagaStatus.COMPENSATED
    assert run.step("create_order").attempts == 1
    assert run.compensations == []


def test_transient_failure_succeeds_later_with_backoff_between_attempts(
    engine: Sagaline,
) -> None:
    """Two injected failures of create_shipment, then success: three attempts, spaced by
    the policy (200 ms, then 400 ms, each within 10 % jitter, as recorded with each retry),
    each next attempt starting no sooner than its delay and not much later.
    """
    customer, product = fresh_shop()
    engine.store.inject_fault("order_processing", "create_shipment", times=2)

    run = engine.start("order_processing", order(customer, product)).wait(30)

    assert run.status is SagaStatus.COMPLETED
    shipment = run.step("create_shipment")
    assert shipment.attempts == 3
    times = [t.timestamp() for t in shipment.attempt_times]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    retrying = [t for t in run.log if t.event == "action.retrying"]
    assert [t.attempt for t in retrying] == [1, 2]
    delays = [t.detail["retry_in_s"] for t in retrying]
    assert 0.2 * 0.9 <= delays[0] <= 0.2 * 1.1
    assert 0.4 * 0.9 <= delays[1] <= 0.4 * 1.1
    for gap, delay in zip(gaps, delays, strict=True):
        # The attempt's own run and the transport come on top: a generous 5 s for them.
        assert delay <= gap <= delay + 5.0, (gaps, delays)


def test_failing_compensation_ends_compensation_failed_and_the_others_still_run(
    engine: Sagaline,
) -> None:
    """refund_payment keeps failing: the saga ends compensation_failed, names what is left
    undone, and release_inventory and cancel_order still ran, in order.
    """
    customer, product = fresh_shop()
    engine.store.inject_fault("order_processing", "create_shipment")
    engine.store.inject_fault("order_processing", "process_payment", Role.COMPENSATION,
                              message="payment provider down")

    run = engine.start("order_processing", order(customer, product, 2, "99.99")).wait(60)

    assert run.status is SagaStatus.COMPENSATION_FAILED
    assert run.undone == ["process_payment"]
    assert run.compensations == ["release_inventory", "cancel_order"]
    refund = run.step("process_payment").compensation
    assert refund is not None and refund.status is StepStatus.FAILED
    assert refund.attempts == 5  # the default compensation policy
    assert refund.error is not None and refund.error.message == "payment provider down"
    after = rows(customer, product)
    assert after["stock"] == 10
    assert after["balance"] == 50_000 - 9_999  # the refund is what was left undone
    assert after["orders"] == ["cancelled"]


def test_fifty_concurrent_orders_all_end_and_the_books_balance(engine: Sagaline) -> None:
    """50 orders at once against stock for 30 and money for 33: every saga ends, stock never
    goes negative, and stock, balance and order rows agree with the outcomes.
    """
    customer, product = fresh_shop(stock=60, balance_cents=100_000)

    with ThreadPoolExecutor(max_workers=10) as pool:
        handles = list(pool.map(
            lambda _: engine.start("order_processing", order(customer, product, 2, "30.00")),
            range(50),
        ))
    runs = [h.wait(120) for h in handles]

    statuses = [r.status for r in runs]
    completed = statuses.count(SagaStatus.COMPLETED)
    assert all(s.is_final for s in statuses)
    assert completed + statuses.count(SagaStatus.COMPENSATED) == 50
    assert completed == 30  # stock for 30 orders of 2; money would last for 33
    after = rows(customer, product)
    assert after["stock"] == 60 - 2 * completed == 0
    assert after["balance"] == 100_000 - 3_000 * completed
    assert after["orders"].count("confirmed") == completed
    assert after["orders"].count("cancelled") == 50 - completed
    with database.session() as session:
        held = session.scalar(select(func.sum(Reservation.quantity)).where(
            Reservation.product_id == product, Reservation.released.is_(False)))
    assert held == 2 * completed


def test_a_payment_over_the_balance_goes_through_the_backup_card(engine: Sagaline) -> None:
    """50.00 on the account, 200.00 on the backup card, an order of 150.00: the payment
    fails, its fallback charges the backup card, and the order completes.
    """
    customer, product = fresh_shop(balance_cents=5_000, backup_cents=20_000)

    run = engine.start("order_processing", order(customer, product, 1, "150.00")).wait(30)

    assert run.status is SagaStatus.COMPLETED
    payment = run.step("process_payment")
    assert payment.status is StepStatus.FAILED
    assert payment.error is not None and payment.error.details["balance_cents"] == 5_000
    assert payment.fallback is not None
    assert payment.fallback.status is StepStatus.COMPLETED
    assert payment.fallback.task == "payments.charge_backup_card"
    assert run.result["payment_id"] == payment.fallback.result["payment_id"]
    assert rows(customer, product)["balance"] == 5_000
    assert rows(customer, product)["payments"] == []
    assert backup_card(customer) == {"available": 5_000, "charges": ["captured"]}


def test_a_later_failure_refunds_the_backup_card_not_the_account(engine: Sagaline) -> None:
    """The backup card paid, then shipping fails for good: the rollback refunds the backup
    card (the fallback's own compensation), then releases stock and cancels the order.
    """
    customer, product = fresh_shop(balance_cents=5_000, backup_cents=20_000)
    engine.store.inject_fault("order_processing", "create_shipment", message="no courier")

    run = engine.start("order_processing", order(customer, product, 1, "150.00")).wait(30)

    assert run.status is SagaStatus.COMPENSATED
    assert run.compensations == ["refund_backup_card", "release_inventory", "cancel_order"]
    assert backup_card(customer) == {"available": 20_000, "charges": ["refunded"]}
    assert rows(customer, product) == {"stock": 10, "balance": 5_000, "orders": ["cancelled"],
                                       "payments": [], "reservations": [True]}


def test_a_payment_above_the_balance_and_the_backup_card_fails_as_before(
    engine: Sagaline,
) -> None:
    customer, product = fresh_shop(balance_cents=5_000, backup_cents=20_000)

    run = engine.start("order_processing", order(customer, product, 1, "250.00")).wait(30)

    assert run.status is SagaStatus.COMPENSATED
    assert run.failed_step == "process_payment"
    assert run.compensations == ["release_inventory", "cancel_order"]
    fallback = run.step("process_payment").fallback
    assert fallback is not None and fallback.error is not None
    assert fallback.error.message.endswith("the backup card allows 200.00")
    assert backup_card(customer) == {"available": 20_000, "charges": []}
    assert rows(customer, product)["balance"] == 5_000

