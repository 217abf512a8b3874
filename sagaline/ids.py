"""Identifiers: UUIDv7 for saga runs, correlation ids and ids derived from a record."""

from __future__ import annotations

import hashlib
import uuid

import uuid6

from sagaline.errors import InvalidCorrelationIdError


def new_id() -> str:
    """A new time-ordered UUIDv7, as its canonical string."""
    return str(uuid6.uuid7())


def causation_id(given: str | None) -> str:
    """The given causation id, checked and normalised; a new UUIDv7 when none is given.

    The new id stands for the start command itself.

    Raises:
        InvalidCorrelationIdError: ``given`` is not a UUID.
    """
    return _checked(given, "causation_id", "pass the id of the event or command that caused "
                    "this run, or none")


def correlation_id(given: str | None) -> str:
    """The given correlation id, checked and normalised; a new UUIDv7 when none is given.

    Any UUID is accepted (a caller's system may use v4); it is returned in canonical
    lowercase form.

    Raises:
        InvalidCorrelationIdError: ``given`` is not a UUID.
    """
    return _checked(given, "correlation_id", "pass a UUID such as "
                    "'0190f5e8-7c3a-7b21-9d4e-5f6a7b8c9d0e', or none to have one generated")


def _checked(given: str | None, what: str, fix: str) -> str:
    if given is None:
        return new_id()
    try:
        return str(uuid.UUID(str(given)))
    except (ValueError, AttributeError, TypeError):
        raise InvalidCorrelationIdError(f"{what} {given!r} is not a UUID; {fix}") from None


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
