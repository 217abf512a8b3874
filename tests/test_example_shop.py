"""The example web shop (``examples/shop``): its handlers start order sagas and answer 202.

Flask's test client against the session's engine and its real worker; the orders use
customers and products of their own (``fresh_shop``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from examples.shop.app import create_app
from sagaline import Sagaline
from tests.test_order_saga import fresh_shop, order, rows

pytestmark = pytest.mark.usefixtures("worker")

FINAL = {"completed", "compensated", "compensation_failed", "failed", "cancelled",
         "needs_attention"}


@pytest.fixture
def client(engine: Sagaline) -> Iterator[FlaskClient]:
    """A test client of the shop on the session's engine."""
    with create_app(engine).test_client() as client:
        yield client


def follow(client: FlaskClient, url: str, timeout: float = 30.0) -> dict[str, Any]:
    """Poll the order's status URL until its saga is final; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        answer = client.get(url)
        assert answer.status_code == 200, answer.get_json()
        body: dict[str, Any] = answer.get_json()
        if body["status"] in FINAL:
            return body
        assert time.monotonic() < deadline, f"{url} still {body['status']} after {timeout} s"
        time.sleep(0.1)


def test_an_order_is_answered_202_at_once_and_its_saga_completes(
        client: FlaskClient) -> None:
    """Given stock and money, a POST answers 202 with where to follow the saga, which
    completes with every effect in place.
    """
    customer, product = fresh_shop(stock=10, balance_cents=50_000)

    answer = client.post("/orders", json=order(customer, product, 2, "99.99"))

    assert answer.status_code == 202
    body = answer.get_json()
    saga_id = body["order_saga"]
    assert body["status_url"] == f"/orders/{saga_id}"
    assert answer.headers["Location"] == f"/orders/{saga_id}"
    final = follow(client, answer.headers["Location"])
    assert final["status"] == "completed"
    assert set(final["result"]) == {"order_id", "payment_id", "shipment_id"}
    assert final["error"] is None
    assert final["compensations"] == []
    assert set(final) == {"status", "result", "error", "compensations"}
    assert rows(customer, product)["orders"] == ["confirmed"]


@pytest.mark.usefixtures("main_worker_paused")
def test_the_handler_answers_while_no_worker_has_taken_the_saga(
        client: FlaskClient) -> None:
    """With no worker taking messages, the POST is still answered 202 at once: the handler
    only records and enqueues the saga (it runs once the worker takes messages again).
    """
    customer, product = fresh_shop()

    answer = client.post("/orders", json=order(customer, product, 1, "10.00"))

    assert answer.status_code == 202
    assert client.get(answer.headers["Location"]).get_json()["status"] == "running"


def test_an_order_over_the_balance_is_compensated_last_step_first(
        client: FlaskClient) -> None:
    """An order the balance cannot pay is still answered 202; its saga fails at payment
    and undoes the reservation, then the order.
    """
    customer, product = fresh_shop(stock=10, balance_cents=500)

    answer = client.post("/orders", json=order(customer, product, 1, "50.00"))

    assert answer.status_code == 202
    final = follow(client, answer.headers["Location"])
    assert final["status"] == "compensated"
    assert final["compensations"] == ["release_inventory", "cancel_order"]
    assert final["error"]["step"] == "process_payment"
    assert final["result"] is None
    assert rows(customer, product)["stock"] == 10


def test_invalid_input_is_answered_422_naming_the_field_and_nothing_is_recorded(
        client: FlaskClient, engine: Sagaline) -> None:
    """A quantity of 0 is refused before anything is recorded; the answer names the field."""
    customer, product = fresh_shop()
    before = engine.store.list_ids(None, limit=1000)

    answer = client.post("/orders", json=order(customer, product, 0))

    assert answer.status_code == 422
    body = answer.get_json()
    assert [e["field"] for e in body["errors"]] == ["items.0.quantity"]
    assert "items.0.quantity" in body["detail"]
    assert engine.store.list_ids(None, limit=1000) == before


def test_a_body_that_is_not_a_json_object_is_answered_400_with_an_example(
        client: FlaskClient) -> None:
    """A form-encoded body is refused with the shape an order takes."""
    answer = client.post("/orders", data={"customer_id": "CUST-123"})

    assert answer.status_code == 400
    assert "Content-Type: application/json" in answer.get_json()["detail"]


def test_the_same_idempotency_key_places_the_order_once(client: FlaskClient) -> None:
    """The same request sent twice with one key answers the first saga both times; other
    inputs with that key are refused with 409.
    """
    customer, product = fresh_shop()
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}

    first = client.post("/orders", json=order(customer, product, 1, "10.00"), headers=key)
    again = client.post("/orders", json=order(customer, product, 1, "10.00"), headers=key)
    other = client.post("/orders", json=order(customer, product, 3, "30.00"), headers=key)

    assert (first.status_code, again.status_code) == (202, 202)
    assert again.get_json()["order_saga"] == first.get_json()["order_saga"]
    assert other.status_code == 409
    assert "new key" in other.get_json()["detail"]
    assert follow(client, first.headers["Location"])["status"] == "completed"
    assert rows(customer, product)["orders"] == ["confirmed"]


@pytest.mark.parametrize("saga_id", [str(uuid.uuid4()), "not-a-saga-id"])
def test_an_unknown_saga_id_is_answered_404(client: FlaskClient, saga_id: str) -> None:
    """No saga has the id: 404, with the problem said."""
    answer = client.get(f"/orders/{saga_id}")

    assert answer.status_code == 404
    assert answer.get_json()["detail"]


def test_a_saga_that_is_not_an_order_is_answered_404(
        client: FlaskClient, engine: Sagaline) -> None:
    """The shop shows order sagas only, not the other sagas of the engine."""
    handle = engine.start("travel_booking", {"traveler": "Ada", "flight_id": "FL-100",
                                             "hotel_id": "HTL-1", "car_id": "CAR-NONE"})

    answer = client.get(f"/orders/{handle.saga_id}")

    assert answer.status_code == 404
    assert "status_url" in answer.get_json()["detail"]
    handle.wait(30)


def test_sagas_switched_off_are_answered_503(
        client: FlaskClient, engine: Sagaline, monkeypatch: pytest.MonkeyPatch) -> None:
    """While sagas are off, an order is refused with 503 and nothing is recorded."""
    customer, product = fresh_shop()
    before = engine.store.list_ids(None, limit=1000)
    monkeypatch.setattr(engine, "enabled", False)

    answer = client.post("/orders", json=order(customer, product))

    assert answer.status_code == 503
    assert "SAGALINE_SAGAS_ENABLED" in answer.get_json()["detail"]
    assert engine.store.list_ids(None, limit=1000) == before


def test_the_home_page_is_a_form_that_posts_orders(client: FlaskClient) -> None:
    """``/`` serves the order form and its script."""
    answer = client.get("/")

    assert answer.status_code == 200
    assert b'<form id="order">' in answer.data
    assert b'fetch("/orders"' in answer.data
