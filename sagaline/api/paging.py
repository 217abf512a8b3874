"""Pages of sagas, newest first, behind an opaque cursor: keyset paging on the store's index.

The store keeps an index of every saga (score: its creation time) and one of each status
(score: when the saga moved to it). A page lists entries in the index's reverse order
(score descending, equal scores by id descending), and its cursor remembers where it
stopped: the ``(score, id)`` of the last entry it looked at, with the filters it was made
under. The next page reads the entries strictly after that position
(:meth:`RedisStore.page_ids <sagaline.store.RedisStore.page_ids>`), whether or not that saga
is still listed, so:

- a saga that stays in the list is shown exactly once across the pages, whatever is started
  meanwhile: a saga started since the first page is newer than every cursor and appears
  only on a fresh first page;
- under a status filter, a saga that changes status meanwhile leaves that list (it is not
  shown if the walk has not reached it yet) or enters it as its newest entry (so, again,
  only on a fresh first page); a saga that expires is not shown;
- any depth costs the same: a page reads from its position on, never from the top.

The name filter is applied here: ids after the position are read in growing windows and
kept when their saga has that name, until the page is full or :data:`MAX_SCAN` ids were
looked at; a page can then be short (even empty) and still have a cursor, positioned at the
last id looked at, so the client goes on from there.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import asdict, dataclass

from sagaline.status import SagaStatus
from sagaline.store import RedisStore

MAX_SCAN = 2_000
"""The most ids one page looks at when filtering by name."""

_INVALID = ("cursor is not one this API returned; pass next_cursor as it came, or leave "
            "cursor out for the first page")


class CursorError(ValueError):
    """Raised when a cursor is not one this API made for the same filters."""


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: strictly after the last entry a page looked at."""

    after: str
    """The id of the last entry the previous page looked at."""
    score: float
    """That entry's score in the index (creation time, or time of the move to the status)."""
    status: str
    """The status filter it was made under (``""``: none)."""
    name: str
    """The name filter it was made under (``""``: none)."""

    def encode(self) -> str:
        """The cursor as an opaque URL-safe string (:meth:`decode` reads it back exactly)."""
        raw = json.dumps(asdict(self), separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, status: SagaStatus | None, name: str | None) -> Cursor:
        """Read a cursor :meth:`encode` made, for a page with the same filters.

        Raises:
            CursorError: It is not such a cursor, or was made for other filters.
        """
        try:
            data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            cursor = cls(**data)
        except (binascii.Error, ValueError, TypeError):
            raise CursorError(_INVALID) from None
        if not cursor._well_formed():
            raise CursorError(_INVALID)
        if (cursor.status, cursor.name) != (status.value if status else "", name or ""):
            raise CursorError("cursor was made for other filters; keep status and name as "
                              "they were for the first page, or leave cursor out")
        return Cursor(cursor.after, float(cursor.score), cursor.status, cursor.name)

    def _well_formed(self) -> bool:
        """Whether every field has the type (and the score a finite value) encode gives."""
        score_ok = (isinstance(self.score, int | float) and not isinstance(self.score, bool)
                    and math.isfinite(self.score))
        return (score_ok and isinstance(self.after, str) and bool(self.after)
                and isinstance(self.status, str) and isinstance(self.name, str))

    @property
    def position(self) -> tuple[float, str]:
        """The ``(score, id)`` the next page starts after, as the store takes it."""
        return self.score, self.after


def page_ids(store: RedisStore, status: SagaStatus | None, name: str | None, limit: int,
             cursor: Cursor | None) -> tuple[list[str], Cursor | None]:
    """The ids of one page, newest first, and the cursor of the next (``None``: no more).

    Each id that stays in the list comes on exactly one page of a walk from the first page
    on (see the module's docstring); a page filtered by name may be short and still have
    a next one.

    Args:
        store: The saga store.
        status: Only sagas in this status, or ``None``.
        name: Only sagas of this name, or ``None``.
        limit: At most this many ids (at least 1).
        cursor: Where the page starts (``None``: at the newest).
    """
    before = cursor.position if cursor else None
    if name is None:
        entries = store.page_ids(status, limit=limit + 1, before=before)
        page = entries[:limit]
        following = _cursor(page[-1], status, name) if len(entries) > limit else None
        return [saga_id for saga_id, _ in page], following
    return _named_page(store, status, name, limit, before)


def _named_page(store: RedisStore, status: SagaStatus | None, name: str, limit: int,
                before: tuple[float, str] | None) -> tuple[list[str], Cursor | None]:
    """A page of the sagas named ``name``, looking at :data:`MAX_SCAN` ids at most."""
    picked: list[str] = []
    scanned, window = 0, limit + 1
    while True:
        size = min(window, MAX_SCAN - scanned)
        entries = store.page_ids(status, limit=size, before=before)
        for n, (entry, saga_name) in enumerate(
                zip(entries, store.names_of([e[0] for e in entries]), strict=True)):
            before, scanned = (entry[1], entry[0]), scanned + 1
            if saga_name == name:
                picked.append(entry[0])
                if len(picked) == limit:
                    more = n + 1 < len(entries) or len(entries) == size
                    return picked, _cursor(entry, status, name) if more else None
        if len(entries) < size:
            return picked, None
        if scanned >= MAX_SCAN:
            return picked, _cursor(entries[-1], status, name)
        window *= 2


def _cursor(entry: tuple[str, float], status: SagaStatus | None, name: str | None) -> Cursor:
    """The cursor of the page after ``entry`` (an ``(id, score)`` of the index)."""
    saga_id, score = entry
    return Cursor(saga_id, score, status.value if status else "", name or "")
