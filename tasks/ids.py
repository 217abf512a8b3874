"""Ids of the participants' rows."""

from __future__ import annotations

import uuid6


def new_uuid7() -> str:
    """A new UUIDv7 (time-ordered), as text."""
    return str(uuid6.uuid7())
