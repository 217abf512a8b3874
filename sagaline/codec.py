"""JSON in and out of the store: one place that says how values are encoded."""

from __future__ import annotations

import json
from typing import Any

from pydantic_core import to_jsonable_python


def dumps(value: Any) -> str:
    """Encode a value compactly; pydantic models, decimals and datetimes are converted."""
    return json.dumps(to_jsonable_python(value), separators=(",", ":"), sort_keys=False)


def loads(raw: str | None) -> Any:
    """Decode a stored value (``None`` stays ``None``)."""
    if raw is None or raw == "":
        return None
    return json.loads(raw)


def jsonable(value: Any) -> Any:
    """The value as plain JSON types, as it will read back from the store."""
    return json.loads(dumps(value))
