"""Identifiers: UUIDv7 for saga runs and correlation ids."""

from __future__ import annotations

import uuid

import uuid6

from .errors import InvalidCorrelationIdError


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
