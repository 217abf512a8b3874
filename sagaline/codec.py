"""JSON in and out of the store: one place that says how values are encoded."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic_core import to_jsonable_python


def dumps(value: Any) -> str:
    """Encode a value compactly; pydantic models, decimals and datetimes are converted."""
    return json.dumps(to_jsonable_python(value), separators=(",", ":"), sort_keys=False)


def canonical(value: Any) -> str:
    """Encode a value so that equal values give equal text: keys sorted, one line."""
    return json.dumps(to_jsonable_python(value), separators=(",", ":"), sort_keys=True)


def loads(raw: str | None) -> Any:
    """Decode a stored value (``None`` stays ``None``)."""
    if raw is None or raw == "":
        return None
    return json.loads(raw)


def jsonable(value: Any) -> Any:
    """The value as plain JSON types, as it will read back from the store."""
    return json.loads(dumps(value))


def jsonable_or_repr(value: dict[str, Any]) -> dict[str, Any]:
    """A mapping as plain JSON types, each value JSON cannot encode as its ``repr``.

    For what is recorded beside an error (its details): it must never fail.
    """
    try:
        return dict(jsonable(value))
    except (ValueError, TypeError, RecursionError):
        pass
    encoded: dict[str, Any] = {}
    for key, item in value.items():
        try:
            encoded[str(key)] = jsonable(item)
        except (ValueError, TypeError, RecursionError):
            encoded[str(key)] = _safe_repr(item)
    return encoded


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)[:1000]
    except Exception:  # a broken __repr__ still leaves a readable record
        return f"<{type(value).__name__}>"


def dumps_events(events: Sequence[dict[str, Any]]) -> str:
    """Emitted events for a store script, each payload as JSON text it logs untouched.

    Lua's cjson re-encodes an empty list it decoded as ``{}``; a payload passed as text
    keeps its lists whatever their length. ``""`` for no events.
    """
    if not events:
        return ""
    return dumps([{**e, "payload": dumps(e.get("payload") or {})} for e in events])
