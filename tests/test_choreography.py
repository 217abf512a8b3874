"""A choreographed order flow on real workers: participants react to events, no coordinator."""

from __future__ import annotations

import itertools
import re
import time
from typing import Any

import pytest
from sqlalchemy import select

from sagaline import DefinitionError, Event, Sagaline
from sagaline.choreography import ChoreographySaga, Reaction
from sagaline.events.trace import trace_flow
from sagas.order_choreography import order_choreography
from sagas.order_processing import OrderInput
from tasks.db import database
from tasks.inventory import Product, release_inventory, reserve_inventory
from tasks.orders import Order
from tasks.payments import Account
from tests.test_order_saga import fresh_shop, order

pytestmark = pytest.mark.usefixtures("worker")


def flow_events(engine: Sagaline, cid: str, *last: str, timeout: float = 20) -> list[Event]:
    """The flow's events, once every one named in ``last`` was published."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        events = trace_flow(engine.store, engine.outbox, engine.bus, cid).events
        if set(last) <= {e.name for e in events}:
            return sorted(events, key=lambda e: (e.occurred_at, e.id))
        time.sleep(0.1)
    names = [e.name for e in trace_flow(engine.store, engine.outbox, engine.bus, cid).events]
    raise AssertionError(f"{last} not all published; got {names}")


def shop_state(customer: str, product: str) -> dict[str, Any]:
    with database.session() as session:
        orders = session.scalars(select(Order).where(Order.customer_id == customer)).all()
        return {
            "stock": session.get(Product, product).stock,  # type: ignore[union-attr]
            "balance": session.get(Account, customer).balance_cents,  # type: ignore[union-attr]
            "orders": [o.status for o in orders],
        }


def test_a_choreographed_order_completes_through_events(engine: Sagaline) -> None:
    """Given enough stock and money, each participant reacts to the one before; the flow
    completes, every event naming the one that triggered it.
    """
    customer, product = fresh_shop(stock=5, balance_cents=10_000)
    cid = order_choreography.start(order(customer, product, 2, "30.00"))
    run = order_choreography.wait(cid, 30)
    assert run.status == "completed"
    assert sorted(run.completed) == ["create_order", "process_payment", "reserve_inventory"]
    assert shop_state(customer, product) == {"stock": 3, "balance": 7_000,
                                             "orders": ["created"]}
    events = flow_events(engine, cid, "checkout.payment.charged")
    chain = [e for e in events if e.name.startswith("checkout.")]
    assert [e.name for e in chain] == ["checkout.order.placed", "checkout.order.accepted",
                                       "checkout.stock.reserved", "checkout.payment.charged"]
    assert all(later.causation_id == earlier.id
               for earlier, later in itertools.pairwise(chain))
    assert chain[-1].payload["order_id"] == chain[1].payload["order_id"]
    assert {e.correlation_id for e in events} == {cid}
    domain = {e.name: e for e in events if not e.name.startswith("checkout.")}
    assert domain["payments.payment.charged"].causation_id == chain[2].id


def test_a_declined_payment_undoes_what_the_other_participants_did(engine: Sagaline) -> None:
    """Given too little money, payments emits its failure; the order and inventory
    participants each undo their part once, and the flow ends compensated.
    """
    customer, product = fresh_shop(stock=5, balance_cents=1_000)
    cid = order_choreography.start(order(customer, product, 2, "30.00"))
    run = order_choreography.wait(cid, 30)
    assert run.status == "compensated"
    assert run.failure == "checkout.payment.declined"
    assert run.undone == {"create_order": "completed", "reserve_inventory": "completed"}
    assert shop_state(customer, product) == {"stock": 5, "balance": 1_000,
                                             "orders": ["cancelled"]}
    events = flow_events(engine, cid, "orders.order.cancelled", "inventory.stock.released")
    declined = next(e for e in events if e.name == "checkout.payment.declined")
    assert declined.payload["failed"] == "process_payment"
    undos = [e for e in events if e.name in ("orders.order.cancelled",
                                             "inventory.stock.released")]
    assert sorted(e.name for e in undos) == ["inventory.stock.released",
                                             "orders.order.cancelled"]
    assert all(e.causation_id == declined.id for e in undos)
    assert "checkout.payment.charged" not in {e.name for e in events}
    tree = trace_flow(engine.store, engine.outbox, engine.bus, cid)
    assert [n.event.name for n in tree.roots[events[0].causation_id]] == [
        "checkout.order.placed"]


def test_missing_stock_fails_at_inventory_and_cancels_the_order(engine: Sagaline) -> None:
    customer, product = fresh_shop(stock=1, balance_cents=10_000)
    cid = order_choreography.start(order(customer, product, 2, "30.00"))
    run = order_choreography.wait(cid, 30)
    assert run.status == "compensated"
    assert run.failure == "checkout.reservation.failed"
    assert run.undone == {"create_order": "completed"}
    assert shop_state(customer, product) == {"stock": 1, "balance": 10_000,
                                             "orders": ["cancelled"]}


def test_a_reaction_to_an_event_nothing_emits_is_refused_at_declaration() -> None:
    with pytest.raises(DefinitionError, match=re.escape(
            "waits for 'checkout.stock.counted', which nothing emits")):
        ChoreographySaga(
            "broken", inputs=OrderInput, starts_with="checkout.order.placed",
            completes_on="checkout.stock.reserved",
            reactions=[Reaction(on="checkout.stock.counted", run=reserve_inventory,
                                undo=release_inventory, emits="checkout.stock.reserved",
                                fails_with="checkout.reservation.failed")])
    with pytest.raises(DefinitionError, match="past tense"):
        ChoreographySaga(
            "broken", inputs=OrderInput, starts_with="checkout.order.place",
            completes_on="checkout.stock.reserved", reactions=[])
