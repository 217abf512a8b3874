"""The causal tree of one business flow: what happened, and what caused what.

A flow is everything that shares a correlation id: its sagas (their steps and
compensations, from their transition logs) and every event published for it (the bus's
per-flow history). Each event names its cause, so the events form a tree: the roots are
what the flow was started by, and each event's children are what it caused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sagaline.events.bus import EventBus
from sagaline.events.canonical import Event
from sagaline.events.outbox import Outbox
from sagaline.store.redis import RedisStore


@dataclass
class TraceNode:
    """An event in the tree, with the events it caused."""

    event: Event
    """The event."""
    children: list[TraceNode] = field(default_factory=list)
    """What it caused, in time order."""

    def as_dict(self) -> dict[str, Any]:
        """The node and its subtree as plain JSON types."""
        return {**self.event.model_dump(mode="json"),
                "caused": [child.as_dict() for child in self.children]}


@dataclass(frozen=True)
class FlowTrace:
    """The causal tree of a flow."""

    correlation_id: str
    """The flow."""
    saga_ids: list[str]
    """Its saga runs, oldest first."""
    roots: dict[str | None, list[TraceNode]]
    """By outside cause (a command id, or ``None``): the events it caused directly."""

    @property
    def events(self) -> list[Event]:
        """Every event of the flow, depth first."""
        found: list[Event] = []

        def walk(nodes: list[TraceNode]) -> None:
            for node in nodes:
                found.append(node.event)
                walk(node.children)

        for nodes in self.roots.values():
            walk(nodes)
        return found


def build_tree(correlation_id: str, events: list[Event], saga_ids: list[str]) -> FlowTrace:
    """Arrange a flow's events by cause; each event once, siblings in time order."""
    unique: dict[str, Event] = {}
    for event in events:
        unique.setdefault(event.id, event)
    ordered = sorted(unique.values(), key=lambda e: (e.occurred_at, e.id))
    nodes = {event.id: TraceNode(event) for event in ordered}
    roots: dict[str | None, list[TraceNode]] = {}
    for event in ordered:
        parent = nodes.get(event.causation_id or "")
        if parent is not None and parent.event.id != event.id:
            parent.children.append(nodes[event.id])
        else:
            roots.setdefault(event.causation_id, []).append(nodes[event.id])
    return FlowTrace(correlation_id, saga_ids, roots)


def trace_flow(store: RedisStore, outbox: Outbox, bus: EventBus | None, correlation_id: str
               ) -> FlowTrace:
    """The causal tree of the flow ``correlation_id``, from the store and the bus.

    Events of sagas whose log was not published yet (the bus was down) are included: they
    are derived from the logs with the ids they will be published with.
    """
    saga_ids = sorted(store.ids_for_correlation(correlation_id))
    events: list[Event] = []
    for saga_id in saga_ids:
        events.extend(outbox.events_of(saga_id))
    if bus is not None:
        events.extend(bus.history(correlation_id))
    return build_tree(correlation_id, events, saga_ids)
