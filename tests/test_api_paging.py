"""Keyset paging of ``GET /sagas``: each saga that stays listed comes exactly once.

The app is built in this process (``create_app``) on a store with a key prefix of its own,
so every list holds just the sagas a test recorded; they are recorded through the store
(its ``create`` script, as ``POST /sagas/{name}`` does), or, for ties and depth, written
straight into the index with a minimal saga hash. Redis is the session's real one.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from fastapi.testclient import TestClient

from sagaline import RedisStore, Sagaline, SagaStatus, new_id
from sagaline.api import TokenSet, create_app, paging
from sagaline.api.paging import Cursor

TOKEN = "paging-" + uuid.uuid4().hex
"""The one token the in-process app accepts."""
JSON_ONLY = {"task_serializer": "json", "result_serializer": "json",
             "accept_content": ["json"], "result_accept_content": ["json"]}


@pytest.fixture
def own(store: RedisStore) -> Iterator[RedisStore]:
    """A store on the session's Redis under a fresh prefix; its keys go after the test."""
    prefix = f"sagaline-test-paging-{uuid.uuid4().hex[:12]}:"
    yield RedisStore(store.client, prefix=prefix)
    keys = list(store.client.scan_iter(match=f"{prefix}*", count=1000))
    for start in range(0, len(keys), 1000):
        store.client.delete(*keys[start:start + 1000])


@pytest.fixture
def http(own: RedisStore) -> Iterator[TestClient]:
    """The API on ``own``, with the token sent on every request."""
    engine = Sagaline(Celery("paging", set_as_current=False, config_source=JSON_ONLY), own)
    app = create_app(engine, TokenSet.parse(TOKEN, None))
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


def record(store: RedisStore, name: str = "t_listed") -> str:
    """Record a new run of ``name`` as starting one does; its id."""
    saga_id = new_id()
    store.create(saga_id, name=name, correlation_id=new_id(), causation_id=None, inputs={},
                 plan=[])
    return saga_id


def put(store: RedisStore, entries: list[tuple[str, float]], name: str = "t_listed",
        status: SagaStatus = SagaStatus.COMPLETED) -> None:
    """Index ``(id, score)`` entries directly, each with a minimal saga hash."""
    with store.client.pipeline(transaction=False) as pipe:
        for saga_id, score in entries:
            pipe.hset(store.saga_keys(saga_id)[0], mapping={
                "id": saga_id, "name": name, "status": status.value, "plan": "[]",
                "created_at": f"{score:.6f}", "correlation_id": saga_id})
        for index in ("all", f"status:{status.value}"):
            pipe.zadd(f"{store.prefix}index:{index}", dict(entries))
        pipe.execute()


def move(store: RedisStore, saga_id: str, old: SagaStatus, new: SagaStatus) -> None:
    """Move a run to another status as the store's scripts do (the move's time is now)."""
    seconds, micros = store.client.time()
    with store.client.pipeline(transaction=True) as pipe:
        pipe.hset(store.saga_keys(saga_id)[0], "status", new.value)
        pipe.zrem(f"{store.prefix}index:status:{old.value}", saga_id)
        pipe.zadd(f"{store.prefix}index:status:{new.value}", {saga_id: seconds + micros / 1e6})
        pipe.execute()


def newest_first(store: RedisStore, index: str = "all") -> list[str]:
    """The ids of an index in Redis's reverse order (score, then id, descending)."""
    return list(store.client.zrevrange(f"{store.prefix}index:{index}", 0, -1))


def get_page(http: TestClient, cursor: str | None, **params: Any) -> tuple[list[str], str | None]:
    """One page of ``GET /sagas``: its ids and its ``next_cursor``."""
    response = http.get("/sagas", params={**params, **({"cursor": cursor} if cursor else {})})
    assert response.status_code == 200, response.text
    body = response.json()
    return [s["saga_id"] for s in body["sagas"]], body["next_cursor"]


def walk(http: TestClient, between: Any = None, **params: Any) -> list[list[str]]:
    """Every page from the first on; ``between()`` runs after each page."""
    pages: list[list[str]] = []
    cursor = None
    while len(pages) < 1000:
        ids, cursor = get_page(http, cursor, **params)
        pages.append(ids)
        if cursor is None:
            return pages
        if between:
            between()
    raise AssertionError("the walk did not end")


# -- over HTTP ----------------------------------------------------------------------------

def test_walking_every_page_shows_each_saga_once_newest_first(own: RedisStore,
                                                              http: TestClient) -> None:
    ids = [record(own) for _ in range(20)]

    pages = walk(http, limit=3)

    assert [len(p) for p in pages] == [3] * 6 + [2]
    listed = [i for page in pages for i in page]
    assert listed == newest_first(own) and set(listed) == set(ids)
    assert listed == ids[::-1]  # recorded one after the other: newest first


def test_sagas_started_between_pages_neither_repeat_nor_skip_the_others(
        own: RedisStore, http: TestClient) -> None:
    for _ in range(20):
        record(own)
    before = newest_first(own)
    started: list[str] = []

    pages = walk(http, lambda: started.extend(record(own) for _ in range(2)), limit=3)

    assert [i for page in pages for i in page] == before
    assert len(started) == 12
    first, _ = get_page(http, None, limit=3)
    assert first == started[::-1][:3]  # they come on a fresh first page


def test_a_status_filter_pages_its_own_list_and_a_saga_that_moves_leaves_it(
        own: RedisStore, http: TestClient) -> None:
    ids = [record(own) for _ in range(12)]
    for saga_id in ids[::3]:
        move(own, saga_id, SagaStatus.RUNNING, SagaStatus.COMPLETED)
    completed = newest_first(own, "status:completed")
    assert set(completed) == set(ids[::3])

    pages = walk(http, limit=2, status="completed")
    assert [i for page in pages for i in page] == completed

    running = newest_first(own, "status:running")
    leaving = running[-1]  # not reached until the last page
    moved: list[str] = []

    def finish_one() -> None:
        if not moved:
            move(own, leaving, SagaStatus.RUNNING, SagaStatus.FAILED)
            moved.append(leaving)

    pages = walk(http, finish_one, limit=3, status="running")
    assert [i for page in pages for i in page] == running[:-1]


def test_a_name_filter_goes_on_after_short_pages(own: RedisStore, http: TestClient,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(30):
        record(own, "t_wanted" if n % 7 == 0 else "t_other")
    wanted = [i for i in newest_first(own) if own.name_of(i) == "t_wanted"]
    assert len(wanted) == 5
    monkeypatch.setattr(paging, "MAX_SCAN", 4)  # a page looks at 4 ids at most

    pages = walk(http, limit=2, name="t_wanted")

    assert [i for page in pages for i in page] == wanted
    assert any(len(page) < 2 for page in pages[:-1])  # short pages that still went on
    assert len(pages) >= 30 // 4
    monkeypatch.undo()
    pages = walk(http, limit=2, name="t_wanted")
    assert [i for page in pages for i in page] == wanted
    assert [len(p) for p in pages] == [2, 2, 1]


def test_entries_with_equal_scores_are_neither_skipped_nor_repeated(
        own: RedisStore, http: TestClient) -> None:
    tied = [(new_id(), 1_700_000_100.25) for _ in range(7)]
    put(own, [(new_id(), 1_700_000_200.5), *tied, (new_id(), 1_700_000_000.125)])
    expected = newest_first(own)

    for limit in (1, 2, 3, 4):
        pages = walk(http, limit=limit)
        assert [i for page in pages for i in page] == expected, limit
    pages = walk(http, limit=2, name="t_listed")
    assert [i for page in pages for i in page] == expected


def test_a_cursor_deep_into_the_list_goes_on_from_there(own: RedisStore,
                                                        http: TestClient) -> None:
    entries = [(new_id(), 1_700_000_000.0 + n) for n in range(12_000)]
    put(own, entries)
    depth = 10_500  # sagas newer than the cursor's: a cursor this deep was refused before
    deep = entries[-depth - 1]
    cursor = Cursor(after=deep[0], score=deep[1], status="", name="").encode()

    ids, following = get_page(http, cursor, limit=200)

    older = [saga_id for saga_id, _ in entries[:-depth - 1]][::-1]
    assert ids == older[:200] and following is not None
    rest = [ids]
    while following is not None:
        ids, following = get_page(http, following, limit=200)
        rest.append(ids)
    assert [i for page in rest for i in page] == older


def test_a_cursor_for_other_filters_or_malformed_is_refused_naming_it(
        own: RedisStore, http: TestClient) -> None:
    for _ in range(3):
        record(own)
    _, cursor = get_page(http, None, limit=1)
    assert cursor is not None
    for params in ({"status": "running"}, {"name": "t_listed"}):
        other = http.get("/sagas", params={"limit": 1, "cursor": cursor, **params})
        assert other.status_code == 422, params
        assert other.json()["errors"][0]["field"] == "cursor"
        assert "other filters" in other.json()["detail"]
    forged = [
        "not-a-cursor",
        _encode({"after": new_id(), "position": 3, "status": "", "name": ""}),  # the old kind
        _encode({"after": new_id(), "score": "1.5", "status": "", "name": ""}),
        _encode({"after": "", "score": 1.5, "status": "", "name": ""}),
        _encode({"after": new_id(), "score": True, "status": "", "name": ""}),
        _encode([1, 2]),
    ]
    for text in forged:
        refused = http.get("/sagas", params={"limit": 1, "cursor": text})
        assert refused.status_code == 422, text
        assert "not one this API returned" in refused.json()["detail"]


def _encode(data: Any) -> str:
    """A cursor-shaped string holding ``data``."""
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


# -- the store ----------------------------------------------------------------------------

def test_page_ids_goes_on_strictly_after_a_position_among_ties(own: RedisStore) -> None:
    ids = sorted(new_id() for _ in range(40))
    put(own, [(new_id(), 20.0), *[(i, 10.0) for i in ids], (new_id(), 5.0)])
    expected = newest_first(own)

    walked: list[str] = []
    before: tuple[float, str] | None = None
    while True:
        page = own.page_ids(None, limit=1, before=before)
        if not page:
            break
        walked.append(page[0][0])
        before = (page[0][1], page[0][0])
    assert walked == expected

    middle = ids[25]
    after = own.page_ids(None, limit=100, before=(10.0, middle))
    assert [i for i, _ in after] == [*ids[:25][::-1], expected[-1]]
    assert all(score == 10.0 for _, score in after[:25])
    oldest = [(expected[-1], 5.0)]
    assert own.page_ids(SagaStatus.COMPLETED, limit=2, before=(10.0, "")) == oldest


def test_page_ids_skips_and_prunes_expired_runs_and_list_ids_still_lists(
        own: RedisStore) -> None:
    entries = [(new_id(), 100.0 + n) for n in range(30)]
    put(own, entries)
    newest = [i for i, _ in entries][::-1]
    gone = newest[2:20]
    own.client.delete(*[own.saga_keys(i)[0] for i in gone])

    page = own.page_ids(None, limit=5, before=(entries[-1][1], entries[-1][0]))

    alive = [i for i in newest if i not in gone]
    assert [i for i, _ in page] == alive[1:6]
    assert not set(gone) & set(newest_first(own))  # pruned from the index
    assert own.list_ids(None, limit=4) == alive[:4]
    assert own.list_ids(SagaStatus.COMPLETED, limit=100) == alive
    assert own.page_ids(None, limit=0) == []
