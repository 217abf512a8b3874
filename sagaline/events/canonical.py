"""The canonical event: one shape for every event the engine and its participants publish.

Its name follows the convention of :mod:`sagaline.naming`; its id is a UUIDv7.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sagaline import ids
from sagaline.naming import name_problems


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
