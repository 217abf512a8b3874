"""Events on the bus from real sagas on a real worker: order, causation, outbox, subscribers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from sagaline import (
    Event,
    EventBus,
    InvalidCorrelationIdError,
    Sagaline,
    SagasDisabledError,
    SagaStatus,
)
from sagaline.events.outbox import Outbox
from tasks.audit import audit_trail
from tests.conftest import DATA_DIR, ROOT
from tests.test_order_saga import fresh_shop, order

pytestmark = pytest.mark.usefixtures("worker")

FAILING_AT_PAYMENT = [
    ("saga.started", None),
    ("saga.step.started", "create_order"), ("orders.order.created", None),
    ("saga.step.completed", "create_order"),
    ("saga.step.started", "reserve_inventory"), ("inventory.stock.reserved", None),
    ("saga.step.completed", "reserve_inventory"),
    ("saga.step.started", "process_payment"), ("saga.step.failed", "process_payment"),
    # the backup card is tried (this customer has none), then the saga fails
    ("saga.fallback.scheduled", "process_payment"), ("saga.fallback.started", "process_payment"),
    ("saga.fallback.failed", "process_payment"),
    ("saga.failed", "process_payment"),
    ("saga.compensation.started", "reserve_inventory"), ("inventory.stock.released", None),
    ("saga.compensation.completed", "reserve_inventory"),
    ("saga.compensation.started", "create_order"), ("orders.order.cancelled", None),
    ("saga.compensation.completed", "create_order"),
    ("saga.compensated", None),
]


def wait_for(check: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not met within {timeout} s")


def published(engine: Sagaline, correlation_id: str, last: str) -> list[Event]:
    """The flow's events on the bus's stream, once the one named ``last`` is there."""
    return wait_for(lambda: (lambda ev: ev if any(e.name == last for e in ev) else None)(
        stream_events(engine, correlation_id)), what=f"{last} on the bus")  # type: ignore[no-any-return]


def stream_events(engine: Sagaline, correlation_id: str) -> list[Event]:
    assert engine.bus is not None
    seen: dict[str, Event] = {}
    for event in engine.bus.read():
        if event.correlation_id == correlation_id:
            seen.setdefault(event.id, event)
    return list(seen.values())


def failing_order(engine: Sagaline, **start: Any) -> tuple[str, str]:
    customer, product = fresh_shop(balance_cents=1_000)
    handle = engine.start("order_processing", order(customer, product, 1, "99.99"), **start)
    assert handle.wait(30).status is SagaStatus.COMPENSATED
    return handle.saga_id, handle.correlation_id


def test_failing_order_publishes_every_event_in_order_with_one_flow_and_causes(
        engine: Sagaline) -> None:
    """Given an order over the balance, when it fails and compensates, then the bus holds
    its whole event sequence in order, every event with the flow's correlation id and a
    cause inside the flow (the start names the given trigger).
    """
    trigger = str(uuid.uuid4())
    saga_id, cid = failing_order(engine, causation_id=trigger)
    events = published(engine, cid, "saga.compensated")
    assert [(e.name, e.payload.get("step") if e.name.startswith("saga.") and
             e.name != "saga.started" and e.name != "saga.compensated" else None)
            for e in events] == FAILING_AT_PAYMENT
    assert {e.correlation_id for e in events} == {cid}
    ids = {e.id: e for e in events}
    assert events[0].causation_id == trigger
    assert all(e.causation_id in ids for e in events[1:])
    by_name = {e.name: e for e in events}
    started = by_name["saga.started"]
    failure = by_name["saga.failed"]
    step_events = [e for e in events if e.name.startswith(("saga.step.", "saga.fallback."))]
    assert all(e.causation_id == started.id for e in step_events)
    assert ids[failure.causation_id or ""].name == "saga.fallback.failed"
    compensations = [e for e in events if e.name.startswith("saga.compensation.")]
    assert all(e.causation_id == failure.id for e in compensations)
    assert by_name["saga.compensated"].causation_id == failure.id
    created = by_name["orders.order.created"]
    assert ids[created.causation_id or ""].name == "saga.step.started"
    assert ids[created.causation_id or ""].payload["step"] == "create_order"
    assert ids[by_name["orders.order.cancelled"].causation_id or ""].name == "saga.failed"
    assert all(e.payload.get("saga_id", saga_id) == saga_id for e in events)


def test_trace_prints_the_causal_tree_of_the_flow(engine: Sagaline) -> None:
    """``sagaline trace`` shows the saga's events nested under their causes, with times."""
    _, cid = failing_order(engine)
    published(engine, cid, "saga.compensated")
    result = subprocess.run(
        [sys.executable, "-m", "sagaline.cli", "--app", "tests.support.app", "trace", cid],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"flow {cid}" in lines[0] and "20 events" in lines[0]

    def depth(name: str, nth: int = 0) -> int:
        found = [line for line in lines if f"  {name}  " in line]
        return len(found[nth]) - len(found[nth].lstrip("│├└─ "))

    assert depth("saga.step.started") > depth("saga.started")
    assert depth("orders.order.created") > depth("saga.step.started")
    assert depth("saga.compensation.started") > depth("saga.failed") > depth(
        "saga.fallback.failed")
    assert any("step=process_payment" in line and "saga.step.failed" in line for line in lines)
    unknown = subprocess.run(
        [sys.executable, "-m", "sagaline.cli", "--app", "tests.support.app", "trace",
         "not-a-uuid"], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2
    assert "correlation_id 'not-a-uuid' is not a UUID" in unknown.stderr


@pytest.fixture
def bus_down(engine: Sagaline) -> Iterator[EventBus]:
    """The bus's stream made unwritable (a string in its place) for the test."""
    assert engine.bus is not None
    bus = engine.bus
    aside = f"{bus.stream}:aside"
    bus.client.rename(bus.stream, aside)
    bus.client.set(bus.stream, "unwritable")
    try:
        yield bus
    finally:  # the stream back, whether or not the test brought it back already
        if bus.client.type(bus.stream) == "string":
            bus.client.delete(bus.stream)
        if bus.client.type(aside) == "stream":
            bus.client.rename(aside, bus.stream)


COMPLETED_ORDER = [("saga.started", None)] + [
    event
    for step, emitted in [("create_order", "orders.order.created"),
                          ("reserve_inventory", "inventory.stock.reserved"),
                          ("process_payment", "payments.payment.charged"),
                          ("create_shipment", "shipping.shipment.scheduled"),
                          ("confirm_order", "orders.order.confirmed")]
    for event in [("saga.step.started", step), (emitted, None), ("saga.step.completed", step)]
] + [("saga.completed", None)]


def test_a_saga_completes_while_the_bus_is_down_and_its_events_follow(
        engine: Sagaline, bus_down: EventBus) -> None:
    """Given an unwritable stream, a saga still completes; once the stream is back, the
    recovery sweep publishes its events, in order, none lost.
    """
    customer, product = fresh_shop()
    handle = engine.start("order_processing", order(customer, product, 1, "20.00"))
    assert handle.wait(30).status is SagaStatus.COMPLETED
    assert engine.store.outbox_due(1000) and handle.saga_id in engine.store.outbox_due(1000)
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        bus_down.read()  # the bus is down indeed
    aside = bus_down.client.xrange(f"{bus_down.stream}:aside")
    assert not [f for _, f in aside if handle.correlation_id in f["event"]]
    # The bus comes back (the fixture's teardown, done here by hand), then beat's sweep runs
    # (it leaves entries younger than a second to the live relays: sweep until it took them).
    bus_down.client.delete(bus_down.stream)
    bus_down.client.rename(f"{bus_down.stream}:aside", bus_down.stream)
    wait_for(lambda: (engine.supervisor.recover(),
                      handle.saga_id not in engine.store.outbox_due(1000))[1],
             what="the sweep published the saga's events")
    events = stream_events(engine, handle.correlation_id)
    assert [(e.name, e.payload.get("step") if e.name.startswith("saga.step.") else None)
            for e in events] == COMPLETED_ORDER
    assert all(e.payload.get("saga_id", handle.saga_id) == handle.saga_id for e in events)


def test_the_audit_subscriber_gets_each_event_once(engine: Sagaline) -> None:
    """A Celery-task subscriber receives the flow's domain events; an event published
    twice is handled once (deduplicated by its id).
    """
    assert engine.bus is not None
    _, cid = failing_order(engine)
    wanted = {"orders.order.created", "inventory.stock.reserved", "inventory.stock.released",
              "orders.order.cancelled"}
    trail = wait_for(lambda: (lambda t: t if {a.name for a in t} >= wanted else None)(
        audit_trail(cid)), what="audit trail")
    assert sorted(a.name for a in trail) == sorted(wanted)
    assert all(a.deliveries == 1 for a in trail)
    again = next(e for e in stream_events(engine, cid) if e.name == "orders.order.created")
    engine.bus.publish(again)
    engine.bus.publish(again)
    dropped = (f"event {again.id} (orders.order.created) already handled by "
               "audit.record_event: dropped")
    wait_for(lambda: (DATA_DIR / "main.log").read_text().count(dropped) >= 2,
             what="both second deliveries dropped by the subscriber")
    trail = audit_trail(cid)
    assert [a.deliveries for a in trail if a.event_id == again.id] == [1]


def test_events_read_by_a_dispatcher_that_died_are_delivered_again(engine: Sagaline) -> None:
    """An entry a dispatcher read but never acknowledged is claimed and delivered later."""
    assert engine.bus is not None
    bus = engine.bus
    cid = str(uuid.uuid4())
    event = Event.new("orders.order.created", {"order_id": 1, "customer_id": "C"},
                      correlation_id=cid, source="tests")
    # A dispatcher that reads every new entry and dies before acknowledging: hold the
    # worker's dispatches off by taking the pending flag first.
    bus.client.set(f"{bus.prefix}events:dispatch_pending", "1", px=5000)
    bus.publish(event)
    bus.client.xreadgroup("audit.record_event", "dead-dispatcher", {bus.stream: ">"})
    assert not audit_trail(cid)
    reclaimer = EventBus(bus.client, prefix=bus.prefix, claim_after=__import__(
        "datetime").timedelta(milliseconds=1))
    reclaimer.subscriptions = bus.subscriptions
    reclaimer.app = bus.app
    time.sleep(0.05)
    assert reclaimer.dispatch() >= 1
    trail = wait_for(lambda: audit_trail(cid), what="redelivered event handled")
    assert [a.event_id for a in trail] == [event.id]
    bus.client.delete(f"{bus.prefix}events:dispatch_pending")


def test_correlation_id_is_generated_as_uuid7_or_refused_before_anything_is_recorded(
        engine: Sagaline) -> None:
    customer, product = fresh_shop()
    handle = engine.start("order_processing", order(customer, product, 1, "20.00"))
    assert uuid.UUID(handle.correlation_id).version == 7
    before = engine.store.client.zcard(f"{engine.store.prefix}index:all")
    with pytest.raises(InvalidCorrelationIdError, match="correlation_id 'order-42'"):
        engine.start("order_processing", order(customer, product), correlation_id="order-42")
    with pytest.raises(InvalidCorrelationIdError, match="causation_id 'because'"):
        engine.start("order_processing", order(customer, product), causation_id="because")
    assert engine.store.client.zcard(f"{engine.store.prefix}index:all") == before
    run = handle.wait(30)
    assert uuid.UUID(run.causation_id or "").version == 7


@pytest.mark.usefixtures("main_worker_paused")
def test_a_start_while_sagas_are_off_is_refused_and_nothing_is_enqueued(
        engine: Sagaline) -> None:
    """Switched off on the engine, or by SAGALINE_SAGAS_ENABLED=false for a process (here
    the CLI), a start is refused; no saga is recorded and no message is enqueued (no worker
    takes messages meanwhile, so the queue's length tells).
    """
    from tests.test_cli import sagaline

    customer, product = fresh_shop()
    before = engine.store.client.zcard(f"{engine.store.prefix}index:all")
    queued = saga_messages(engine)
    engine.enabled = False
    try:
        with pytest.raises(SagasDisabledError, match="SAGALINE_SAGAS_ENABLED"):
            engine.start("order_processing", order(customer, product))
    finally:
        engine.enabled = True
    refused = sagaline("run", "order_processing", "--input", json.dumps(order(customer, product)),
                       env={**os.environ, "PYTHONPATH": str(ROOT),
                            "SAGALINE_SAGAS_ENABLED": "false"})
    assert refused.returncode == 1, refused.stderr
    assert "sagas are switched off" in refused.stderr
    assert engine.store.client.zcard(f"{engine.store.prefix}index:all") == before
    assert saga_messages(engine) == queued


def saga_messages(engine: Sagaline) -> list[str]:
    """The ids of the saga messages waiting in the queue.

    The bus's messages aside: earlier sagas' events may be dispatched to subscribers
    meanwhile (a delayed dispatch the paused worker already held runs when due).
    """
    assert engine.bus is not None
    bus_tasks = {"sagaline.events.dispatch", *engine.bus.subscriptions}
    raw = engine.store.client.lrange("celery", 0, -1)
    return [m["headers"]["id"] for m in map(json.loads, raw)
            if m["headers"].get("task") not in bus_tasks]


def test_with_lifecycle_events_off_only_the_steps_events_are_published(
        engine: Sagaline) -> None:
    """The lifecycle flag off: the relay publishes what the steps emitted, not saga.*."""
    saga_id, cid = failing_order(engine)
    published(engine, cid, "saga.compensated")
    wait_for(lambda: saga_id not in engine.store.outbox_due(1000), what="outbox drained")
    quiet_bus = EventBus(engine.store.client, prefix=f"quiet-{uuid.uuid4().hex[:6]}:")
    quiet = Outbox(engine.store, quiet_bus, lifecycle_events=False)
    engine.store.client.hset(engine.store.saga_keys(saga_id)[0], "events_published", 0)
    assert quiet.flush(saga_id) == 4
    assert [e.name for e in quiet_bus.read()] == [
        "orders.order.created", "inventory.stock.reserved", "inventory.stock.released",
        "orders.order.cancelled"]
    quiet_bus.client.delete(quiet_bus.stream)


def test_a_step_context_hands_the_flow_ids_to_outside_calls(engine: Sagaline) -> None:
    """``ctx.outgoing_headers()`` carries the correlation id and the step's cause."""
    handle = engine.start("t_headers", {"tag": "headers"})
    run = handle.wait(30)
    headers = run.result
    assert headers["X-Correlation-ID"] == handle.correlation_id
    events = published(engine, handle.correlation_id, "saga.completed")
    started = next(e for e in events if e.name == "saga.step.started")
    assert headers["X-Causation-ID"] == started.id


def test_an_event_published_while_a_lost_dispatch_holds_the_flag_still_reaches_its_subscriber(
        engine: Sagaline) -> None:
    """A dispatch requested before was lost (its worker died with the message): the flag
    says one is waiting, yet the event is handled within seconds, without beat.
    """
    assert engine.bus is not None
    bus = engine.bus
    cid = str(uuid.uuid4())
    flag = f"{bus.prefix}events:dispatch_pending"
    bus.client.delete(f"{flag}:backstop")
    bus.client.set(flag, "1", px=5000)  # the lost dispatch's flag: nothing will clear it
    event = Event.new("orders.order.created", {"order_id": 2, "customer_id": "C"},
                      correlation_id=cid, source="tests")
    bus.publish(event)
    trail = wait_for(lambda: audit_trail(cid), timeout=20, what="event handled")
    assert [a.event_id for a in trail] == [event.id]
