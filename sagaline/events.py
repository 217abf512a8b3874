"""The canonical event: one shape for every event the engine and its participants publish.

An event name is ``domain.entity.action`` (or ``domain.action`` when the entity is the
domain itself, as the engine's ``saga.started``): lowercase words joined by underscores,
the action in the past tense (``ml.run.completed``, never ``ml.run.complete``), because an
event states something that happened. :func:`event_name` declares a name in code; the
lint (``sagaline events lint``) finds every declared or published name and checks it
against the taxonomy file.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from . import ids

#: ``domain.entity.action`` or ``domain.action``: lowercase words, digits, underscores.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){1,2}$")

#: Past participles that do not end in ``-ed``.
IRREGULAR_PAST = frozenset({
    "begun", "bought", "broken", "built", "chosen", "cut", "done", "drawn", "found",
    "frozen", "given", "held", "hidden", "kept", "known", "left", "lost", "made", "overridden",
    "paid", "put", "quit", "read", "rebuilt", "reset", "run", "sent", "set", "shown", "shut",
    "sold", "spent", "split", "taken", "told", "undone", "withdrawn", "won", "written",
})


def name_problems(name: str) -> list[str]:
    """What is wrong with an event name; empty when it follows the convention."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        return [f"{name!r} is not 'domain.entity.action' (lowercase words joined by '_', "
                "two or three parts separated by '.')"]
    action = name.rsplit(".", 1)[-1]
    word = action.rsplit("_", 1)[-1]
    if not (word.endswith("ed") or word in IRREGULAR_PAST):
        return [f"{name!r}: the action {action!r} is not in the past tense (an event says "
                f"what happened: '{action}d' or '{action}ed', not '{action}')"]
    return []


def event_name(name: str) -> str:
    """Declare an event name in code: checked now, and found by the events lint.

    Raises:
        InvalidEventError: The name breaks the convention.
    """
    problems = name_problems(name)
    if problems:
        from .errors import InvalidEventError

        raise InvalidEventError("; ".join(problems))
    return name


def _uuid(value: str, what: str, *, version: int | None = None) -> str:
    try:
        parsed = uuid.UUID(str(value))
    except (ValueError, AttributeError, TypeError):
        raise ValueError(f"{what} {value!r} is not a UUID") from None
    if version is not None and parsed.version != version:
        raise ValueError(f"{what} {value!r} is a UUIDv{parsed.version}, not a UUIDv{version}")
    return str(parsed)


class Event(BaseModel):
    """One event, as published on the bus and kept in a flow's history.

    Construction fails (pydantic ``ValidationError``, naming the field) on a malformed id,
    correlation or causation id, or a name that breaks the convention.

    Example:
        >>> Event.new("orders.order.created", {"order_id": 42},
        ...           correlation_id=run.correlation_id, source="orders")
    """

    model_config = ConfigDict(frozen=True)

    id: str
    """The event's UUIDv7 (time ordered); subscribers deduplicate on it."""
    name: str
    """What happened, ``domain.entity.action`` in the past tense."""
    domain: str
    """The name's first part: the domain the event belongs to."""
    source: str
    """What published it (``sagaline`` for the engine, a task's name for a step)."""
    correlation_id: str
    """The business flow it belongs to."""
    causation_id: str | None = None
    """The event or command that caused it; ``None`` only for a flow's first cause."""
    payload: dict[str, Any] = Field(default_factory=dict)
    """The event's data, as its taxonomy entry's schema describes."""
    meta: dict[str, Any] = Field(default_factory=dict)
    """Context that is not part of the payload (saga, step, attempt)."""
    occurred_at: datetime
    """When it happened, in UTC."""

    @field_validator("id")
    @classmethod
    def _id_is_uuid7(cls, value: str) -> str:
        return _uuid(value, "id", version=7)

    @field_validator("correlation_id")
    @classmethod
    def _correlation_is_uuid(cls, value: str) -> str:
        return _uuid(value, "correlation_id")

    @field_validator("causation_id")
    @classmethod
    def _causation_is_uuid(cls, value: str | None) -> str | None:
        return None if value is None else _uuid(value, "causation_id")

    @field_validator("name")
    @classmethod
    def _name_follows_convention(cls, value: str) -> str:
        problems = name_problems(value)
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @model_validator(mode="after")
    def _domain_matches_name(self) -> Event:
        if self.name.split(".", 1)[0] != self.domain:
            raise ValueError(f"domain {self.domain!r} is not the first part of {self.name!r}")
        return self

    @classmethod
    def new(cls, name: str, payload: dict[str, Any] | None = None, *, correlation_id: str,
            causation_id: str | None = None, source: str, meta: dict[str, Any] | None = None,
            event_id: str | None = None, occurred_at: datetime | None = None) -> Event:
        """A new event named ``name``, its id and time filled in unless given."""
        return cls(
            id=event_id or ids.new_id(), name=name, domain=name.split(".", 1)[0], source=source,
            correlation_id=correlation_id, causation_id=causation_id, payload=payload or {},
            meta=meta or {}, occurred_at=occurred_at or datetime.now(UTC),
        )


def derived_id(at_s: float, *parts: str) -> str:
    """A UUIDv7 fixed by a time and some parts: the same inputs give the same id.

    Events derived from a saga's transition log get their ids this way (from the entry's
    time, the saga id and the entry's position), so publishing an entry again after a
    failure gives the same id, and subscribers can drop the duplicate.
    """
    digest = hashlib.sha256("|".join(parts).encode()).digest()
    millis = int(at_s * 1000) & ((1 << 48) - 1)
    rand_a = int.from_bytes(digest[:2], "big") & 0x0FFF
    rand_b = int.from_bytes(digest[2:10], "big") & ((1 << 62) - 1)
    value = (millis << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return str(uuid.UUID(int=value))
