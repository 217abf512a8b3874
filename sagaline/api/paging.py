"""Pages of sagas, newest first, behind an opaque cursor, over what the store offers.

The store lists ids newest first from its index of every saga or of one status
(:meth:`RedisStore.list_ids <sagaline.store.RedisStore.list_ids>`), but always from the
top: it has no "after this one". So a page is found like this:

1. The cursor remembers the last id the previous page looked at, its position in the list
   then, and the filters it was made under.
2. If that id is still in the list, the list is read from the top far enough to find it
   again (sagas started since push it down) and the page goes on after it.
3. If it left the list (it expired, or it changed status under a status filter), the page
   goes on after the newest id older than it in the list of all sagas (UUIDv7 ids sort by
   time, as that list does); under a status filter, from its old position, so a saga may be
   skipped or shown twice when the list changed meanwhile.
4. The name filter is applied here: ids are read in growing windows until the page is full
   or :data:`MAX_SCAN` ids were looked at; a page can then be short and still have a
   cursor.

A page thus costs reads in proportion to its depth, and a cursor deeper than
:data:`MAX_DEPTH` is refused: filter by status or name instead.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import asdict, dataclass

from sagaline.status import SagaStatus
from sagaline.store import RedisStore

MAX_DEPTH = 10_000
"""The deepest position in a list a cursor may point at."""
MAX_SCAN = 2_000
"""The most ids one page looks at when filtering by name."""
_SLACK = 50
"""How much further than its old position a cursor's id is first looked for."""


class CursorError(ValueError):
    """Raised when a cursor is not one this API made for the same filters."""


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: after the last id a page looked at."""

    after: str
    """The last id the previous page looked at."""
    position: int
    """Its position in the list then (0: the newest)."""
    status: str
    """The status filter it was made under (``""``: none)."""
    name: str
    """The name filter it was made under (``""``: none)."""

    def encode(self) -> str:
        """The cursor as an opaque URL-safe string."""
        raw = json.dumps(asdict(self), separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, status: SagaStatus | None, name: str | None) -> Cursor:
        """Read a cursor :meth:`encode` made, for a page with the same filters.

        Raises:
            CursorError: It is not such a cursor, was made for other filters, or is
                deeper than :data:`MAX_DEPTH`.
        """
        try:
            data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            cursor = cls(**data)
            valid = (isinstance(cursor.after, str) and isinstance(cursor.position, int)
                     and isinstance(cursor.status, str) and isinstance(cursor.name, str))
        except (binascii.Error, ValueError, TypeError):
            valid = False
        if not valid:
            raise CursorError("cursor is not one this API returned; pass next_cursor as it "
                              "came, or leave cursor out for the first page")
        if (cursor.status, cursor.name) != (status.value if status else "", name or ""):
            raise CursorError("cursor was made for other filters; keep status and name as "
                              "they were for the first page, or leave cursor out")
        if not 0 <= cursor.position < MAX_DEPTH:
            raise CursorError(f"cursor is deeper than {MAX_DEPTH} sagas; filter by status or "
                              "name to list fewer")
        return cursor


def page_ids(store: RedisStore, status: SagaStatus | None, name: str | None, limit: int,
             cursor: Cursor | None) -> tuple[list[str], Cursor | None]:
    """The ids of one page, newest first, and the cursor of the next (``None``: no more).

    Args:
        store: The saga store.
        status: Only sagas in this status, or ``None``.
        name: Only sagas of this name, or ``None``.
        limit: At most this many ids.
        cursor: Where the page starts (``None``: at the newest).
    """
    start = _start(store, status, cursor)
    window = start + limit + 1  # one more than the page: whether another page follows
    names: dict[str, str | None] = {}
    while True:
        ids = store.list_ids(status, limit=window)
        picked: list[str] = []
        last = start - 1
        for position in range(start, len(ids)):
            saga_id, last = ids[position], position
            if name is not None and saga_id not in names:
                names[saga_id] = store.name_of(saga_id)
            if name is None or names[saga_id] == name:
                picked.append(saga_id)
                if len(picked) == limit:
                    break
        listed_all = len(ids) < window
        if len(picked) == limit or listed_all or window - start >= MAX_SCAN:
            break
        window = start + min(2 * (window - start), MAX_SCAN)
    more = last + 1 < len(ids) or not listed_all
    if not more or last < start or last + 1 >= MAX_DEPTH:
        return picked, None
    return picked, Cursor(ids[last], last, status.value if status else "", name or "")


def _start(store: RedisStore, status: SagaStatus | None, cursor: Cursor | None) -> int:
    """The position in the list as it is now where the page after ``cursor`` starts."""
    if cursor is None:
        return 0
    now = store.status(cursor.after)
    if now is not None and (status is None or now is status):
        window = cursor.position + _SLACK
        while window <= 2 * MAX_DEPTH:
            ids = store.list_ids(status, limit=window)
            if cursor.after in ids:
                return ids.index(cursor.after) + 1
            if len(ids) < window:
                break
            window *= 2
    if status is None:
        ids = store.list_ids(None, limit=cursor.position + _SLACK)
        return next((n for n, saga_id in enumerate(ids) if saga_id < cursor.after), len(ids))
    return cursor.position
