"""The dashboard, its API views and ``sagaline graph``: diagrams of definitions, and a real
headless Chromium (Debian's, driven by Playwright) watching sagas run on a real worker.

Nothing is skipped: without ``/usr/bin/chromium`` the browser tests fail saying how to
install it (``.ci/run`` installs it).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import struct
import uuid
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from sagaline import Role, Saga, Sagaline, SagaStatus, Step
from sagaline.diagram import diagram, mermaid_text, to_mermaid
from sagas.order_processing import order_processing
from sagas.travel_booking import travel_booking
from sagas.user_provisioning import user_provisioning
from tests.conftest import DATA_DIR, ROOT
from tests.support.api import TOKEN, ApiServer, start_api
from tests.support.sagas import TAG, Tagged, parent, with_fallback, with_pivot
from tests.support.steps import gate_key, succeed
from tests.test_api import started, wait_for
from tests.test_cli import sagaline
from tests.test_order_saga import fresh_shop, order

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "var"

# -- the diagram --------------------------------------------------------------------------

#: A line of the Mermaid ``to_mermaid`` prints: each is one of these, nothing else.
_MERMAID_LINE = re.compile("|".join([
    r"flowchart TD", r"%% .*", r"direction LR", r"end",
    r'subgraph group_\w+ \["[^"]*"\]',
    r'\w+(\(\["[^"]*"\]\)|\[\["[^"]*"\]\]|\{\{"[^"]*"\}\}|\("[^"]*"\)|\["[^"]*"\])',
    r'\w+ (-->|==>|-\.->)(\|"[^"]*"\|)? \w+',
    r"classDef \w+ [\w:#,.\- ]+", r"class [\w,]+ \w+",
]))


def mermaid_lines(saga: Saga) -> list[str]:
    """The saga's Mermaid, line by line, after checking each line is well formed."""
    lines = [line.strip() for line in to_mermaid(saga).splitlines()]
    bad = [line for line in lines if not _MERMAID_LINE.fullmatch(line)]
    assert bad == [], bad
    assert lines[0] == "flowchart TD"
    opened = sum(1 for line in lines if line.startswith("subgraph "))
    assert opened == lines.count("end")
    return lines


def test_the_order_saga_draws_its_steps_in_order_its_fallback_and_its_undos_in_reverse(
        ) -> None:
    lines = mermaid_lines(order_processing)

    forward = ["saga_start", "step_create_order", "step_reserve_inventory",
               "step_process_payment", "step_create_shipment", "step_confirm_order",
               "saga_completed"]
    for a, b in itertools.pairwise(forward):
        assert f"{a} --> {b}" in lines
    assert 'step_process_payment -.->|"gives up"| fallback_process_payment' in lines
    assert "fallback_process_payment --> step_create_shipment" in lines
    assert 'step_create_order -.->|"undo"| undo_create_order' in lines
    assert "undo_create_shipment ==> undo_process_payment" in lines
    assert "undo_create_shipment ==> undo_fallback_process_payment" in lines
    assert "undo_reserve_inventory ==> undo_create_order" in lines
    assert "undo_create_order ==> saga_compensated" in lines
    assert not any("undo_confirm_order" in line for line in lines)  # it has no undo
    assert 'undo_create_order("undo create_order<br/>orders.cancel_order")' in lines
    assert 'fallback_process_payment("fallback of process_payment<br/>' \
           'payments.charge_backup_card")' in lines


def test_a_parallel_group_is_a_box_of_branches_side_by_side_undone_together() -> None:
    lines = mermaid_lines(travel_booking)

    start = lines.index('subgraph group_book_stay ["book_stay: in parallel, at most 2 at '
                        'a time"]')
    inside = lines[start:lines.index("end", start)]
    assert "direction LR" in inside
    assert {line.split("[", 1)[0] for line in inside[2:]} == {"step_book_hotel",
                                                             "step_rent_car"}
    for branch in ("book_hotel", "rent_car"):
        assert f"step_book_flight --> step_{branch}" in lines
        assert f"step_{branch} --> saga_completed" in lines
        assert f"undo_{branch} ==> undo_book_flight" in lines
    graph = diagram(travel_booking)
    hotel, car = graph.node("step_book_hotel"), graph.node("step_rent_car")
    assert hotel.row == car.row and hotel.col != car.col
    assert graph.groups[0].max_concurrency == 2
    assert set(graph.groups[0].nodes) == {"step_book_hotel", "step_rent_car"}


def test_a_pivot_is_marked_and_nothing_at_or_after_it_is_rolled_back() -> None:
    lines = mermaid_lines(user_provisioning)

    pivot = next(line for line in lines if line.startswith("step_send_magic_link"))
    assert pivot.startswith('step_send_magic_link{{"') and "pivot" in pivot
    assert 'step_send_magic_link -.->|"a later step gives up"| saga_needs_attention' in lines
    assert "undo_create_default_community ==> undo_provision_vault" in lines
    assert "undo_generate_token ==> saga_compensated" in lines
    assert not any(line.startswith(("undo_send_magic_link", "undo_emit_onboarding"))
                   for line in lines)
    assert diagram(user_provisioning).node("step_send_magic_link").kind == "pivot"
    assert any(line.startswith("step_send_email{{") for line in mermaid_lines(with_pivot))


def test_a_fallback_and_its_own_undo_are_drawn_beside_the_step() -> None:
    lines = mermaid_lines(with_fallback)

    assert 'step_pay -.->|"gives up"| fallback_pay' in lines
    assert 'fallback_pay -.->|"undo"| undo_fallback_pay' in lines
    assert {"step_pay --> step_later", "fallback_pay --> step_later"} <= set(lines)
    assert {"undo_later ==> undo_pay", "undo_later ==> undo_fallback_pay",
            "undo_fallback_pay ==> undo_first"} <= set(lines)
    graph = diagram(with_fallback)
    step, fallback = graph.node("step_pay"), graph.node("fallback_pay")
    assert fallback.row == step.row and fallback.col > step.col
    assert graph.node("undo_fallback_pay").col > graph.node("undo_pay").col


def test_a_step_that_runs_a_child_saga_names_it_and_its_steps() -> None:
    lines = mermaid_lines(parent)

    assert 'step_child[["child<br/>runs saga t_child<br/>c1 → c2"]]' in lines
    assert 'undo_child("undo child<br/>rolls back saga t_child")' in lines
    assert "step_p1 --> step_child" in lines and "step_child --> step_p3" in lines
    assert diagram(parent).node("step_child").child == "t_child"


def test_labels_with_quotes_and_markup_are_escaped() -> None:
    saga = Saga("t_quoted", inputs=Tagged, description='Says "hi" & <b>#1</b> `now`',
                steps=[Step("say", succeed, args=TAG)])

    lines = mermaid_lines(saga)

    assert ('saga_start(["t_quoted<br/>Says #quot;hi#quot; #amp; #lt;b#gt;#35;1#lt;/b#gt; '
            '#96;now#96;"])') in lines
    assert mermaid_text("a\nb") == "a<br/>b"


def test_the_json_form_places_every_node_once_and_links_only_known_nodes() -> None:
    for saga in (order_processing, travel_booking, user_provisioning, parent):
        data = json.loads(json.dumps(diagram(saga).as_dict()))
        ids = [n["id"] for n in data["nodes"]]
        cells = [(n["row"], n["col"]) for n in data["nodes"]]
        assert len(ids) == len(set(ids)) and len(cells) == len(set(cells)), saga.name
        assert {e["source"] for e in data["edges"]} | {e["target"] for e in data["edges"]} \
            <= set(ids)
        assert data["rows"] == 1 + max(r for r, _ in cells)
        assert data["cols"] == 1 + max(c for _, c in cells)


# -- sagaline graph -----------------------------------------------------------------------

def test_sagaline_graph_prints_the_mermaid_and_json_without_starting_redis(
        tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SAGALINE_DATA_DIR": str(tmp_path)}
    env.pop("SAGALINE_REDIS_URL", None)
    shutil.copy(DATA_DIR / "sagaline.db", tmp_path)  # migrated: the runs only read it

    with ThreadPoolExecutor(3) as pool:  # each run loads the app: about 10 s
        text, as_json, unknown = pool.map(lambda args: sagaline(*args, env=env), [
            ("graph", "order_processing"), ("graph", "order_processing", "--json"),
            ("graph", "no_such_saga")])

    assert text.returncode == 0, text.stderr
    assert text.stdout == to_mermaid(order_processing)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == diagram(order_processing).as_dict()
    assert unknown.returncode == 2
    assert "no saga named 'no_such_saga'" in unknown.stderr
    assert "order_processing" in unknown.stderr  # the registered ones are listed
    assert not (tmp_path / "redis").exists()  # no embedded Redis was started


# -- the API's views ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def api(worker: Any) -> Iterator[ApiServer]:
    """``sagaline api`` for the test app, on the session's Redis and worker."""
    server = start_api("dashboard")
    yield server
    server.stop()


def test_the_dashboard_page_and_files_need_no_token_and_allow_only_its_own(
        api: ApiServer) -> None:
    with api.client(token=None) as anonymous:
        page = anonymous.get("/dashboard")
        script = anonymous.get("/dashboard/static/js/main.js")
        outside = anonymous.get("/dashboard/static/../dashboard.py")
        openapi = anonymous.get("/openapi.json").json()

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'type="password"' in page.text and TOKEN not in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy and "form-action 'none'" in policy
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert outside.status_code == 404
    assert "/dashboard" not in openapi["paths"]


def test_definitions_and_stuck_need_the_token(api: ApiServer) -> None:
    with api.client(token=None) as anonymous:
        for path in ("/definitions", "/definitions/order_processing", "/stuck"):
            refused = anonymous.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"] == "Bearer"
    with api.client() as http:
        listed = {d["name"]: d for d in http.get("/definitions").json()}
        about = http.get("/definitions/travel_booking").json()
        unknown = http.get("/definitions/no_such_saga")

    assert listed["order_processing"]["steps"][0] == "create_order"
    assert listed["travel_booking"]["groups"] == ["book_stay"]
    assert about["definition"]["name"] == "travel_booking"
    assert about["graph"] == diagram(travel_booking).as_dict()
    assert about["mermaid"] == to_mermaid(travel_booking)
    assert unknown.status_code == 404
    assert "no saga named 'no_such_saga'" in unknown.json()["detail"]


def needs_attention(http: httpx.Client, engine: Sagaline) -> str:
    """A saga whose step after its pivot gave up: stuck, waiting for an operator."""
    engine.store.inject_fault("t_with_pivot", "after", times=3, message="mail server away")
    saga_id = started(http, "t_with_pivot", {"tag": f"dash-{uuid.uuid4().hex[:8]}"})
    wait_for(http, saga_id, lambda b: b["status"] == "needs_attention")
    return saga_id


def test_stuck_lists_a_saga_waiting_for_an_operator(api: ApiServer, engine: Sagaline) -> None:
    with api.client() as http:
        saga_id = needs_attention(http, engine)
        stuck = {s["saga_id"]: s for s in http.get("/stuck").json()}

    assert stuck[saga_id]["status"] == "needs_attention"
    assert stuck[saga_id]["name"] == "t_with_pivot"
    assert stuck[saga_id]["overdue_s"] >= 0


# -- in a real browser --------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium, driven by Playwright (never its own downloaded one)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's Chromium with 'apt-get install "
                    "-y chromium' (.ci/run does so); the dashboard is tested in it")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                              args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh tab (its own storage); fails the test on any script error in the page, and
    on any answer but 401 (a wrong token) that is an error.
    """
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.on("response", lambda r: errors.append(f"{r.status} {r.url}")
           if r.status >= 400 and r.status != 401 else None)
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error"
           and "Failed to load resource" not in m.text else None)
    yield tab
    context.close()
    assert errors == []


def open_dashboard(page: Page, api: ApiServer, token: str = TOKEN) -> None:
    """Open the dashboard and give it ``token``."""
    page.goto(f"{api.url}/dashboard")
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")


def png_pixels(path: Path) -> tuple[int, int, set[bytes]]:
    """A PNG's width, height and set of distinct pixels (8-bit RGB or RGBA, no interlace)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        header = data[pos + 8:pos + 8 + length] if kind == b"IHDR" else header
        idat += data[pos + 8:pos + 8 + length] if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, interlace) == (8, 0) and color in (2, 6), (depth, color, interlace)
    size = 3 if color == 2 else 4
    raw, stride = zlib.decompress(idat), width * size
    previous, colours = bytearray(stride), set()
    for y in range(height):
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        _unfilter(raw[y * (stride + 1)], line, previous, size)
        colours.update(bytes(line[x:x + size]) for x in range(0, stride, size * 7))
        previous = line
    return width, height, colours


def _unfilter(kind: int, line: bytearray, up: bytearray, size: int) -> None:
    for i in range(len(line)):
        left = line[i - size] if i >= size else 0
        corner = up[i - size] if i >= size else 0
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 2:
            line[i] = (line[i] + up[i]) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + (left + up[i]) // 2) & 0xFF
        elif kind == 4:
            p = left + up[i] - corner
            pa, pb, pc = abs(p - left), abs(p - up[i]), abs(p - corner)
            near = left if pa <= pb and pa <= pc else up[i] if pb <= pc else corner
            line[i] = (line[i] + near) & 0xFF


def screenshot(page: Page, name: str) -> Path:
    """Save the page under ``var/`` and check the picture is not blank."""
    SHOTS.mkdir(exist_ok=True)
    path = SHOTS / f"dashboard-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    width, height, colours = png_pixels(path)
    assert width >= 1000 and height >= 600, (width, height)
    assert len(colours) > 20, f"{path} looks blank: {len(colours)} colours"
    return path


def test_a_wrong_token_is_refused_and_the_token_never_reaches_a_url(
        api: ApiServer, page: Page) -> None:
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))

    open_dashboard(page, api, token="wrong-" + uuid.uuid4().hex * 2)
    expect(page.locator("#login-error")).to_contain_text("refused")
    open_dashboard(page, api)
    expect(page.locator("#nav")).to_be_visible()
    expect(page.locator("section.list h2").first).to_have_text("Running")

    assert page.evaluate("sessionStorage.getItem('sagaline.dashboard.token')") == TOKEN
    assert not any(TOKEN in url for url in urls)
    page.click("#forget")
    expect(page.locator("#login")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


def test_the_dashboard_follows_an_order_live_until_it_is_compensated(
        api: ApiServer, page: Page, engine: Sagaline) -> None:
    """An order short of stock fails at reserve_inventory; undoing the order fails twice
    more before it succeeds, so the page sees the saga compensating, then compensated,
    from the stream, without reloading.
    """
    open_dashboard(page, api)
    customer, product = fresh_shop(stock=1)
    engine.store.inject_fault("order_processing", "create_order", Role.COMPENSATION,
                              times=3, message="orders database away")
    try:
        with api.client() as http:
            saga_id = started(http, "order_processing", order(customer, product, 2))
        page.click("nav a[data-tab=recent]")
        link = page.locator(f'a[data-saga-id="{saga_id}"]')
        link.click(timeout=15_000)
        page.evaluate("window.sameDocument = true")
        status = page.locator("#saga-status")
        expect(status).to_have_attribute("data-status", "compensating", timeout=15_000)
        expect(status).to_have_attribute("data-status", "compensated", timeout=40_000)
    finally:
        engine.store.clear_faults()

    assert page.evaluate("window.sameDocument") is True  # the stream, not a reload
    facts = page.locator(".facts")
    expect(facts).to_contain_text("failed step")
    expect(facts).to_contain_text("OutOfStockError")
    expect(facts).not_to_contain_text("[object")
    reserve = page.locator('tr[data-step="reserve_inventory"]')
    expect(reserve.locator(".badge").first).to_have_text("failed")
    create = page.locator('tr[data-step="create_order"]')
    expect(create.locator("td").nth(3)).to_contain_text("completed 4 attempts")
    expect(page.locator('.log li[data-event="compensation.retrying"]')).to_have_count(3)
    expect(page.locator(".log li").first).to_have_attribute("data-event", "saga.started")
    expect(page.locator('.log li[data-event="saga.compensated"]')).to_have_count(1)
    expect(page.locator("svg.saga-diagram")).to_be_visible()
    node = page.locator('g.node[data-node-id="step_reserve_inventory"]')
    expect(node).to_have_attribute("data-status", "failed")
    expect(page.locator('g.node[data-node-id="undo_create_order"]')).to_have_attribute(
        "data-status", "completed")
    expect(page.locator('g.node[data-node-id="saga_compensated"]')).to_have_attribute(
        "data-status", "compensated")
    screenshot(page, "compensated")
    assert engine.get(saga_id).status is SagaStatus.COMPENSATED


def test_a_long_step_shows_a_progress_bar_that_moves(api: ApiServer, page: Page,
                                                     engine: Sagaline) -> None:
    open_dashboard(page, api)
    expect(page.locator("#nav")).to_be_visible()
    tag = f"dash-{uuid.uuid4().hex[:8]}"
    with api.client() as http:
        saga_id = started(http, "t_with_progress", {"tag": tag})

    page.evaluate(f"location.hash = '#/saga/{saga_id}'")
    bar = page.locator('tr[data-step="train"] [role=progressbar]')
    expect(bar).to_have_attribute("aria-valuenow", "1", timeout=20_000)
    expect(bar).to_have_attribute("aria-valuemax", "3")
    assert bar.locator(".fill").evaluate("e => e.style.width") == "33.3%"
    expect(page.locator('tr[data-step="train"] .progress-text')).to_have_text("1/3 (33%) unit=1")
    screenshot(page, "progress")
    engine.store.client.set(gate_key(tag), "1")

    expect(page.locator("#saga-status")).to_have_attribute("data-status", "completed",
                                                           timeout=30_000)
    expect(bar).to_have_attribute("aria-valuenow", "3")


def test_the_stuck_tab_and_a_definition_with_its_diagram_and_mermaid(
        api: ApiServer, page: Page, engine: Sagaline) -> None:
    with api.client() as http:
        saga_id = needs_attention(http, engine)
    open_dashboard(page, api)
    page.click("nav a[data-tab=stuck]")
    page.locator(f'a[data-saga-id="{saga_id}"]').click(timeout=15_000)
    expect(page.locator("#saga-status")).to_have_attribute("data-status", "needs_attention")
    expect(page.locator('.log li[data-event="saga.needs_attention"]')).to_have_count(1)
    expect(page.locator('g.node[data-node-id="step_after"]')).to_have_attribute(
        "data-status", "failed")

    page.click("nav a[data-tab=definitions]")
    page.click('a[href="#/definitions/travel_booking"]')
    expect(page.locator('svg.saga-diagram g.group[data-group="book_stay"]')).to_be_visible()
    nodes = page.locator("svg.saga-diagram g.node")
    expect(nodes).to_have_count(len(diagram(travel_booking).nodes))
    assert page.locator("pre.mermaid-text").text_content() == to_mermaid(travel_booking)
    expect(page.locator(".facts")).to_contain_text("TravelInput (traveler, flight_id")
    screenshot(page, "definition")

    page.evaluate("location.hash = '#/definitions/t_parent'")
    page.click('g.node[data-node-id="step_child"]')
    expect(page.locator("#view h1")).to_have_text("t_child")
