"""The HTTP API: ``sagaline api`` as a real process on the tests' Redis and worker.

Its tokens are in the server's environment only. Every request goes over TCP with httpx.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

import sagaline.api
from sagaline import EmbeddedRedis, Sagaline, SagaStatus, new_id
from sagaline.api import TokenSet, create_app
from sagaline.api.bodies import SagaSummary, StepSummary
from sagaline.api.paging import Cursor
from sagaline.errors import ConfigurationError
from tests.conftest import DATA_DIR, ROOT
from tests.support.api import (
    HASHED_TOKEN,
    TOKEN,
    ApiServer,
    SseEvent,
    api_command,
    api_env,
    sse_events,
    start_api,
    token_hash,
)
from tests.support.postgres import free_port
from tests.support.steps import gate_key
from tests.test_order_saga import fresh_shop, order

WRONG_TOKEN = "wrong-" + uuid.uuid4().hex * 2
"""A token no server accepts, to see it never echoed."""


def tag() -> dict[str, str]:
    return {"tag": f"api-{uuid.uuid4().hex[:8]}"}


def started(client: httpx.Client, name: str, inputs: dict[str, Any], **headers: str) -> str:
    """Start a saga over HTTP; its id."""
    response = client.post(f"/sagas/{name}", json=inputs, headers=headers)
    assert response.status_code == 202, response.text
    return str(response.json()["saga_id"])


def wait_for(client: httpx.Client, saga_id: str, check: Callable[[dict[str, Any]], bool],
             timeout: float = 30) -> dict[str, Any]:
    """GET the saga until ``check`` holds for it; its summary then."""
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(f"/sagas/{saga_id}").json()
        if check(body):
            return body
        assert time.monotonic() < deadline, f"saga {saga_id} is still {body['status']}"
        time.sleep(0.05)


def final(client: httpx.Client, saga_id: str, timeout: float = 30) -> dict[str, Any]:
    return wait_for(client, saga_id, lambda b: SagaStatus(b["status"]).is_final, timeout)


def follow(client: httpx.Client, saga_id: str, **headers: str) -> list[SseEvent]:
    """Every event of the saga's stream, until the server ends it."""
    with client.stream("GET", f"/sagas/{saga_id}/events", headers=headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(sse_events(response))


# -- tokens -------------------------------------------------------------------------------

def test_the_api_does_not_start_without_a_token_and_says_what_to_set() -> None:
    env = api_env()
    del env["SAGALINE_API_TOKENS"], env["SAGALINE_API_TOKEN_HASHES"]
    result = subprocess.run(api_command("--port", str(free_port())), cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "SAGALINE_API_TOKENS" in result.stderr
    assert "SAGALINE_API_TOKEN_HASHES" in result.stderr


def test_a_short_token_stops_the_start_without_being_printed() -> None:
    """Awaits ``api_tokens`` in config/settings.py: until then config refuses the variable."""
    short = "short-token-1234"
    env = api_env(SAGALINE_API_TOKENS=short)
    del env["SAGALINE_API_TOKEN_HASHES"]
    result = subprocess.run(api_command("--port", str(free_port())), cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "at least 32" in result.stderr
    assert short not in result.stderr + result.stdout


def test_token_sets_keep_hashes_and_accept_raw_and_hashed_tokens_alike() -> None:
    tokens = TokenSet.parse(f" {TOKEN} ,", f"{token_hash(HASHED_TOKEN)},")
    assert len(tokens) == 2
    assert tokens.accepts(TOKEN) and tokens.accepts(HASHED_TOKEN)
    assert not tokens.accepts(WRONG_TOKEN) and not tokens.accepts("")
    assert not tokens.accepts(token_hash(TOKEN))  # a hash is no token
    assert TOKEN not in repr(tokens) and TOKEN not in str(vars(tokens))


@pytest.mark.parametrize(("tokens", "hashes", "names"), [
    ("x" * 31, None, "SAGALINE_API_TOKENS: token 1 has 31 characters"),
    ("a" * 40 + " b", None, "SAGALINE_API_TOKENS: token 1 has characters"),
    (None, "md5:" + "0" * 32, "SAGALINE_API_TOKEN_HASHES: entry 1"),
    (None, token_hash(TOKEN) + ",sha256:zz", "SAGALINE_API_TOKEN_HASHES: entry 2"),
])
def test_a_malformed_token_or_hash_is_refused_naming_where_it_is(
        tokens: str | None, hashes: str | None, names: str) -> None:
    with pytest.raises(ConfigurationError, match=names) as caught:
        TokenSet.parse(tokens, hashes)
    assert (tokens or "@@") not in str(caught.value)


def test_the_app_settings_win_over_the_environment() -> None:
    settings = SimpleNamespace(api_tokens=SecretStr(TOKEN), api_token_hashes=None)
    tokens = TokenSet.configured(settings, {"SAGALINE_API_TOKENS": HASHED_TOKEN})
    assert tokens.accepts(TOKEN) and not tokens.accepts(HASHED_TOKEN)
    from_env = TokenSet.configured(object(), {"SAGALINE_API_TOKENS": HASHED_TOKEN})
    assert from_env.accepts(HASHED_TOKEN)


def test_an_app_without_tokens_is_refused(engine: Sagaline) -> None:
    with pytest.raises(ConfigurationError, match="SAGALINE_API_TOKEN_HASHES"):
        create_app(engine, TokenSet([]))


def test_the_api_package_exports_its_face() -> None:
    assert set(sagaline.api.__all__) == {"TokenSet", "create_app"}


def test_requests_without_a_valid_token_get_one_answer_that_echoes_nothing(
        api: ApiServer) -> None:
    saga = str(uuid.uuid4())
    routes = [("GET", "/sagas"), ("GET", f"/sagas/{saga}"), ("POST", "/sagas/t_quick"),
              ("POST", f"/sagas/{saga}/cancel"), ("GET", f"/sagas/{saga}/events")]
    credentials: list[dict[str, str]] = [
        {}, {"Authorization": f"Bearer {WRONG_TOKEN}"}, {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer"}, {"Authorization": f"Bearer {token_hash(HASHED_TOKEN)}"},
    ]
    answers = set()
    with api.client(token=None) as anonymous:
        for method, path in routes:
            for headers in credentials:
                response = anonymous.request(method, path, headers=headers, json=tag())
                assert response.status_code == 401, (method, path, headers)
                assert response.headers["www-authenticate"] == "Bearer"
                assert WRONG_TOKEN not in response.text and TOKEN not in response.text
                answers.add(response.text)
    assert len(answers) == 1
    assert "Authorization: Bearer" in answers.pop()


def test_a_raw_token_and_a_token_given_as_its_hash_both_open_the_api(api: ApiServer) -> None:
    for token in (TOKEN, HASHED_TOKEN):
        with api.client(token) as http:
            assert http.get("/sagas", params={"limit": 1}).status_code == 200


# -- health and docs ----------------------------------------------------------------------

def test_health_and_readiness_need_no_token(api: ApiServer) -> None:
    with api.client(token=None) as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok", "detail": None}
        ready = anonymous.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_sagas_switched_off_are_503_and_a_lost_redis_makes_it_unready_not_dead(
        worker: Any) -> None:
    own = EmbeddedRedis(DATA_DIR / f"api-redis-{uuid.uuid4().hex[:8]}")
    own.start()
    server = start_api("own-redis", api_env(SAGALINE_REDIS_URL=own.url,
                                            SAGALINE_SAGAS_ENABLED="false"))
    try:
        with server.client() as http:
            refused = http.post("/sagas/t_quick", json=tag())
            assert refused.status_code == 503 and "switched off" in refused.json()["detail"]
            assert http.get("/readyz").status_code == 200
            own.stop()
            assert http.get("/healthz").status_code == 200
            ready = http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
    finally:
        server.stop()
        own.stop()


def test_the_docs_describe_every_route_and_the_token(api: ApiServer) -> None:
    with api.client(token=None) as anonymous:
        assert anonymous.get("/docs").status_code == 200
        spec = anonymous.get("/openapi.json").json()
    assert set(spec["paths"]) == {"/healthz", "/readyz", "/sagas", "/sagas/{name}",
                                  "/sagas/{saga_id}", "/sagas/{saga_id}/cancel",
                                  "/sagas/{saga_id}/events",
                                  "/sagas/{saga_id}/signals/{signal}", "/definitions",
                                  "/definitions/{name}", "/stuck"}
    signal = spec["paths"]["/sagas/{saga_id}/signals/{signal}"]["post"]
    assert {"202", "401", "404", "409", "422"} <= set(signal["responses"])
    start = spec["paths"]["/sagas/{name}"]["post"]
    assert start["summary"] == "Start a saga"
    assert {"202", "401", "404", "409", "422", "503"} <= set(start["responses"])
    assert start["security"] == [{"token": []}]
    assert spec["components"]["securitySchemes"]["token"]["scheme"] == "bearer"
    assert "security" not in spec["paths"]["/healthz"]["get"]


def test_the_documented_summary_is_the_clis_json(engine: Sagaline) -> None:
    summary = engine.start("t_quick", tag()).wait(30).summary()
    assert set(SagaSummary.model_fields) == set(summary)
    assert set(StepSummary.model_fields) == set(summary["steps"][0])
    SagaSummary.model_validate(summary)


# -- starting and showing -----------------------------------------------------------------

def test_an_order_started_over_http_completes_and_reads_as_the_cli_prints_it(
        client: httpx.Client, engine: Sagaline) -> None:
    customer, product = fresh_shop(balance_cents=50_000)

    response = client.post("/sagas/order_processing", json=order(customer, product))

    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {"saga_id", "correlation_id", "name"}
    assert body["name"] == "order_processing"
    assert response.headers["location"] == f"/sagas/{body['saga_id']}"
    done = final(client, body["saga_id"])
    assert done["status"] == "completed"
    assert done["correlation_id"] == body["correlation_id"]
    assert [s["status"] for s in done["steps"]] == ["completed"] * 5
    assert client.get(response.headers["location"]).json() == \
        engine.get(body["saga_id"]).summary()


def test_invalid_inputs_are_refused_naming_the_field_and_nothing_is_recorded(
        client: httpx.Client, engine: Sagaline) -> None:
    customer, product = fresh_shop()
    inputs = order(customer, product)
    del inputs["customer_id"]
    before = set(engine.store.list_ids(None, limit=1000))

    response = client.post("/sagas/order_processing", json=inputs)

    assert response.status_code == 422
    problem = response.json()
    assert "customer_id" in problem["detail"]
    assert "customer_id" in [e["field"] for e in problem["errors"]]
    assert set(engine.store.list_ids(None, limit=1000)) == before


@pytest.mark.parametrize(("body", "fault"), [
    (b"[1, 2]", "JSON object"), (b"{not json", "not valid JSON"), (b"", "JSON object"),
])
def test_a_body_that_is_not_a_json_object_is_refused(client: httpx.Client, body: bytes,
                                                     fault: str) -> None:
    response = client.post("/sagas/t_quick", content=body,
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body"
    assert fault in response.json()["detail"]


def test_a_body_over_the_limit_is_refused(client: httpx.Client) -> None:
    response = client.post("/sagas/t_quick", json={"tag": "x" * (1024 * 1024)})
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]


def test_an_unknown_saga_is_not_found(client: httpx.Client) -> None:
    response = client.post("/sagas/no_such_saga", json={})
    assert response.status_code == 404
    assert "no_such_saga" in response.json()["detail"]


def test_unknown_and_malformed_ids_are_not_found(client: httpx.Client) -> None:
    for path in (f"/sagas/{uuid.uuid4()}", "/sagas/not-an-id", "/sagas/abc:steps",
                 f"/sagas/{uuid.uuid4()}/events", f"/sagas/{uuid.uuid4()}/cancel"):
        method = "POST" if path.endswith("cancel") else "GET"
        response = client.request(method, path)
        assert response.status_code == 404, path
        assert "no saga" in response.json()["detail"]


def test_correlation_and_causation_headers_are_recorded_and_checked(
        client: httpx.Client) -> None:
    correlation, causation = str(uuid.uuid4()), str(uuid.uuid4())
    saga_id = started(client, "t_quick", tag(), **{"X-Correlation-ID": correlation,
                                                    "X-Causation-ID": causation})
    run = final(client, saga_id)
    assert (run["correlation_id"], run["causation_id"]) == (correlation, causation)

    for header in ("X-Correlation-ID", "X-Causation-ID"):
        refused = client.post("/sagas/t_quick", json=tag(), headers={header: "not-a-uuid"})
        assert refused.status_code == 422
        assert refused.json()["errors"] == [
            {"field": header, "problem": refused.json()["errors"][0]["problem"]}]
        assert "UUID" in refused.json()["detail"]


# -- listing ------------------------------------------------------------------------------

def pages(client: httpx.Client, wanted: set[str], most: int = 60, **params: Any
          ) -> list[list[str]]:
    """Walk the pages of ``GET /sagas`` until every id in ``wanted`` was seen."""
    seen: list[list[str]] = []
    cursor = None
    while len(seen) < most:
        response = client.get("/sagas", params={**params, **({"cursor": cursor} if cursor
                                                              else {})})
        assert response.status_code == 200, response.text
        body = response.json()
        seen.append([s["saga_id"] for s in body["sagas"]])
        cursor = body["next_cursor"]
        if wanted <= {i for page in seen for i in page} or cursor is None:
            break
    return seen


def test_sagas_are_listed_newest_first_a_page_at_a_time(client: httpx.Client) -> None:
    ids = [started(client, "t_quick", tag()) for _ in range(3)]
    for saga_id in ids:
        assert final(client, saga_id)["status"] == "completed"

    walked = pages(client, set(ids), limit=1)
    listed = [i for page in walked for i in page]
    assert all(len(page) == 1 for page in walked)
    assert len(listed) == len(set(listed))  # no saga twice
    assert [i for i in listed if i in ids] == ids[::-1]

    completed = pages(client, set(ids), limit=1, status="completed")
    listed = [i for page in completed for i in page]
    assert set(ids) <= set(listed) and len(listed) == len(set(listed))

    by_name = pages(client, set(ids), limit=2, name="t_quick")
    assert all(len(page) <= 2 for page in by_name)
    runs = client.get("/sagas", params={"name": "t_quick", "limit": 5}).json()["sagas"]
    assert {r["name"] for r in runs} == {"t_quick"}
    assert set(ids) <= {i for page in by_name for i in page}


def test_a_cursor_whose_saga_is_gone_goes_on_after_where_it_was(client: httpx.Client,
                                                                 engine: Sagaline) -> None:
    older = started(client, "t_quick", tag())
    gone = new_id()  # a saga that was listed between the two, and expired since
    newer = started(client, "t_quick", tag())  # newer than it: not on the page after it
    index = f"{engine.store.prefix}index:all"
    scores = [engine.store.client.zscore(index, i) for i in (older, newer)]
    between = (scores[0] + scores[1]) / 2

    cursor = Cursor(after=gone, score=between, status="", name="").encode()
    page = client.get("/sagas", params={"limit": 1, "cursor": cursor}).json()

    assert [s["saga_id"] for s in page["sagas"]] == [older]


def test_a_bad_list_query_is_refused_naming_the_parameter(client: httpx.Client) -> None:
    bogus = client.get("/sagas", params={"status": "bogus"})
    assert bogus.status_code == 422
    assert bogus.json()["errors"][0]["field"] == "status"
    assert "'completed'" in bogus.json()["detail"] and "'cancelled'" in bogus.json()["detail"]
    for limit in (0, 201):
        response = client.get("/sagas", params={"limit": limit})
        assert response.status_code == 422 and response.json()["errors"][0]["field"] == "limit"
    garbage = client.get("/sagas", params={"cursor": "not-a-cursor"})
    assert garbage.status_code == 422 and garbage.json()["errors"][0]["field"] == "cursor"
    cursor = client.get("/sagas", params={"limit": 1}).json()["next_cursor"]
    assert cursor is not None
    other = client.get("/sagas", params={"limit": 1, "status": "running", "cursor": cursor})
    assert other.status_code == 422 and "other filters" in other.json()["detail"]


# -- cancelling ---------------------------------------------------------------------------

def test_a_running_saga_is_cancelled_and_an_ended_one_is_a_conflict(
        client: httpx.Client) -> None:
    saga_id = started(client, "t_cancellable", tag())
    wait_for(client, saga_id, lambda b: b["steps"][1]["status"] == "running")

    response = client.post(f"/sagas/{saga_id}/cancel", json={"reason": "changed my mind"})

    assert response.status_code == 202, response.text
    assert response.json()["saga_id"] == saga_id
    assert response.json()["status"] in ("compensating", "cancelled")
    ended = final(client, saga_id)
    assert ended["status"] == "cancelled"
    assert "changed my mind" in ended["error"]["message"]
    again = client.post(f"/sagas/{saga_id}/cancel")
    assert again.status_code == 409
    assert "already ended (cancelled)" in again.json()["detail"]


def test_a_cancel_reason_too_long_is_refused(client: httpx.Client) -> None:
    response = client.post(f"/sagas/{uuid.uuid4()}/cancel", json={"reason": "x" * 501})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "reason"


# -- events -------------------------------------------------------------------------------

def test_a_saga_streams_its_transitions_in_order_and_the_stream_ends_with_it(
        client: httpx.Client, engine: Sagaline) -> None:
    saga_id = started(client, "t_slow_start", tag())

    events = follow(client, saga_id)

    run = engine.get(saga_id)
    transitions = [e for e in events if e.kind == "transition"]
    assert [e.kind for e in events] == ["transition"] * len(transitions) + ["end"]
    assert [e.data["event"] for e in transitions] == [t.event for t in run.log]
    assert [e.id for e in transitions] == [str(n) for n in range(len(run.log))]
    assert [e.data["index"] for e in transitions] == list(range(len(run.log)))
    assert transitions[0].data["event"] == "saga.started"
    assert transitions[-1].data["event"] == "saga.completed"
    assert events[-1].data == client.get(f"/sagas/{saga_id}").json()
    assert run.ended_at is not None
    assert transitions[0].received < run.ended_at.timestamp()  # live, not after the fact

    resumed = follow(client, saga_id, **{"Last-Event-ID": "1"})
    assert [e.data["index"] for e in resumed if e.kind == "transition"] == \
        list(range(2, len(run.log)))
    bad = client.get(f"/sagas/{saga_id}/events", headers={"Last-Event-ID": "x"})
    assert bad.status_code == 422


def test_a_running_step_streams_its_progress(client: httpx.Client, engine: Sagaline) -> None:
    inputs = tag()
    saga_id = started(client, "t_with_progress", inputs)
    kinds = []
    with client.stream("GET", f"/sagas/{saga_id}/events") as response:
        for event in sse_events(response):
            kinds.append(event.kind)
            if event.kind == "progress":
                assert event.data["step"] == "train"
                assert event.data["progress"]["total"] == 3
                engine.store.client.set(gate_key(inputs["tag"]), "1")
    assert "progress" in kinds
    assert kinds[-1] == "end"
    assert kinds.index("progress") < kinds.index("end")


# -- starting once ------------------------------------------------------------------------

def test_fifty_posts_at_once_with_one_idempotency_key_start_one_saga(
        api: ApiServer, engine: Sagaline) -> None:
    inputs, key = tag(), f"burst-{uuid.uuid4()}"
    before = set(engine.store.list_ids(None, limit=1000))

    def post(_: int) -> httpx.Response:
        with api.client() as http:
            return http.post("/sagas/t_quick", json=inputs, headers={"Idempotency-Key": key})

    with ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(post, range(50)))

    assert [r.status_code for r in responses] == [202] * 50
    ids = {r.json()["saga_id"] for r in responses}
    assert len(ids) == 1
    assert set(engine.store.list_ids(None, limit=1000)) - before == ids
    assert engine.wait(ids.pop(), 30).status is SagaStatus.COMPLETED


def test_an_idempotency_key_reused_with_other_inputs_is_a_conflict(
        client: httpx.Client) -> None:
    key = f"reuse-{uuid.uuid4()}"
    first = started(client, "t_quick", tag(), **{"Idempotency-Key": key})
    again = client.post("/sagas/t_quick", json=tag(), headers={"Idempotency-Key": key})
    assert again.status_code == 409
    assert first in again.json()["detail"]


# -- last: what the server printed --------------------------------------------------------

def test_no_token_ever_reaches_the_servers_output(api: ApiServer) -> None:
    output = api.output()
    assert "Uvicorn running" in output or "Application startup complete" in output
    for token in (TOKEN, HASHED_TOKEN, WRONG_TOKEN):
        assert token not in output

