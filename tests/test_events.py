"""The canonical event, the taxonomy and the events lint (no worker needed)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from sagaline import Event, InvalidEventError, Taxonomy, TaxonomyError, event_name
from sagaline.events.lifecycle import LIFECYCLE_NAMES
from sagaline.events.lint import lint
from sagaline.ids import derived_id
from sagaline.naming import name_problems
from tests.conftest import ROOT

TAXONOMY = ROOT / "events.toml"
FIXTURES = ROOT / "tests" / "fixtures" / "events"
PROJECT = [ROOT / p for p in ("sagaline", "sagas", "tasks", "config")]
CID = "0190f5e8-7c3a-7b21-9d4e-5f6a7b8c9d0e"


def test_new_event_has_a_time_ordered_uuid7_and_its_domain() -> None:
    first = Event.new("orders.order.created", {"order_id": 1}, correlation_id=CID,
                      source="orders")
    second = Event.new("orders.order.created", {"order_id": 2}, correlation_id=CID,
                       source="orders")
    assert uuid.UUID(first.id).version == 7
    assert first.id < second.id
    assert first.domain == "orders"
    assert first.occurred_at.tzinfo is not None


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("id", "not-a-uuid", "id 'not-a-uuid' is not a UUID"),
    ("id", str(uuid.uuid4()), "is a UUIDv4, not a UUIDv7"),
    ("correlation_id", "42", "correlation_id '42' is not a UUID"),
    ("causation_id", "nope", "causation_id 'nope' is not a UUID"),
    ("name", "ml.run.complete", "is not in the past tense"),
    ("name", "Orders.Created", "is not 'domain.entity.action'"),
    ("domain", "payments", "is not the first part of"),
])
def test_event_construction_fails_naming_the_field_and_the_problem(
        field: str, value: str, expected: str) -> None:
    good = Event.new("orders.order.created", correlation_id=CID, source="orders")
    data = {**good.model_dump(), field: value}
    with pytest.raises(ValidationError) as raised:
        Event(**data)
    assert expected in str(raised.value)
    if field != "domain":
        assert field in str(raised.value)


def test_names_follow_one_convention_in_the_past_tense() -> None:
    assert name_problems("ml.run.completed") == []
    assert name_problems("saga.compensation_failed") == []
    assert name_problems("payments.payment.paid") == []
    assert "past tense" in name_problems("ml.run.complete")[0]
    assert name_problems("orders") != []
    assert name_problems("a.b.c.d") != []
    with pytest.raises(InvalidEventError, match="past tense"):
        event_name("user.onboarding.complete")


def test_an_id_derived_from_a_log_entry_is_a_stable_uuid7() -> None:
    one = derived_id(1_763_900_000.1234, "saga-id", "3")
    assert one == derived_id(1_763_900_000.1234, "saga-id", "3")
    assert one != derived_id(1_763_900_000.1234, "saga-id", "4")
    assert uuid.UUID(one).version == 7
    assert uuid.UUID(one).variant == uuid.RFC_4122
    later = derived_id(1_763_900_001.0, "saga-id", "0")
    assert later > one


def test_every_lifecycle_event_is_registered_with_a_schema() -> None:
    taxonomy = Taxonomy.load(TAXONOMY)
    assert len(set(LIFECYCLE_NAMES.values())) >= 10
    assert {"saga.started", "saga.completed", "saga.compensated", "saga.step.completed"} <= set(
        LIFECYCLE_NAMES.values())
    for name in LIFECYCLE_NAMES.values():
        assert name in taxonomy
        assert taxonomy.get(name).payload["type"] == "object"


def test_taxonomy_refuses_a_bad_entry_naming_file_line_and_problem(tmp_path: Path) -> None:
    path = tmp_path / "events.toml"
    path.write_text('[events."ml.run.completed"]\ndomain = "ml"\ndescription = "ok"\n\n'
                    '[events."ml.run.complete"]\ndomain = "ml"\ndescription = "bad"\n')
    with pytest.raises(TaxonomyError, match=r"events.toml:5: 'ml.run.complete'.*past tense"):
        Taxonomy.load(path)
    path.write_text('[events."ml.run.started"]\ndomain = "Bolt ML"\ndescription = "x"\n')
    with pytest.raises(TaxonomyError, match="domain 'Bolt ML'; a domain is lowercase"):
        Taxonomy.load(path)
    # An event may be owned by a domain other than its name's first part (Thunderline's
    # user.onboarding.completed belongs to gate); unset, it is the first part.
    path.write_text('[events."user.onboarding.completed"]\ndomain = "gate"\ndescription = "x"'
                    '\n\n[events."ml.run.started"]\ndescription = "y"\n')
    loaded = Taxonomy.load(path)
    assert loaded.get("user.onboarding.completed").domain == "gate"
    assert loaded.get("ml.run.started").domain == "ml"
    path.write_text('[events."ml.run.started"]\ndomain = "ml"\n')
    with pytest.raises(TaxonomyError, match="needs a description"):
        Taxonomy.load(path)
    path.write_text('[events."ml.run.started"]\ndomain = "ml"\ndescription = "x"\n'
                    'payload = { type = "no-such-type" }\n')
    with pytest.raises(TaxonomyError, match="invalid payload schema"):
        Taxonomy.load(path)


def test_taxonomy_checks_a_payload_against_its_schema() -> None:
    taxonomy = Taxonomy.load(TAXONOMY)
    assert taxonomy.check("orders.order.created", {"order_id": 1, "customer_id": "C"}) == []
    problems = taxonomy.check("orders.order.created", {"order_id": "one"})
    assert any("'customer_id' is a required property" in p for p in problems)
    assert any("order_id: 'one' is not of type 'integer'" in p for p in problems)


def test_lint_fails_on_an_unregistered_name_naming_file_and_line() -> None:
    problems = lint(TAXONOMY, [FIXTURES / "unregistered.py"])
    assert [str(p) for p in problems] == [
        f"{FIXTURES / 'unregistered.py'}:9: event 'orders.order.teleported' is not registered "
        f"in {TAXONOMY}; add it with its domain, description and payload schema"
    ]


def test_lint_fails_on_a_present_tense_name() -> None:
    problems = lint(TAXONOMY, [FIXTURES / "present_tense.py"])
    assert len(problems) == 1
    assert problems[0].line == 9
    assert "'ml.run.complete': the action 'complete' is not in the past tense" in str(
        problems[0])


def test_lint_passes_on_the_project_and_finds_its_names() -> None:
    from sagaline.events.lint import names_in_code

    assert lint(TAXONOMY, PROJECT) == []
    found = {use.name for use in names_in_code(PROJECT)}
    assert set(LIFECYCLE_NAMES.values()) <= found
    assert {"orders.order.created", "payments.payment.refunded"} <= found


def test_lint_fails_on_an_emitted_payload_that_breaks_its_schema(tmp_path: Path) -> None:
    good = Event.new("inventory.stock.released", {"order_id": 7, "released": 1},
                     correlation_id=CID, source="inventory")
    bad = Event.new("inventory.stock.released", {"order_id": 7, "released": -1},
                    correlation_id=CID, source="inventory")
    emitted = tmp_path / "emitted.jsonl"
    emitted.write_text(good.model_dump_json() + "\n" + bad.model_dump_json() + "\n")
    problems = lint(TAXONOMY, [], emitted)
    assert [(p.line, p.message) for p in problems] == [
        (2, "emitted event: inventory.stock.released: released: -1 is less than the "
            "minimum of 0")
    ]
    emitted.write_text(json.dumps({"name": "orders.order.teleported", "payload": {}}) + "\n")
    assert "not registered" in lint(TAXONOMY, [], emitted)[0].message


def test_lint_command_exits_1_naming_file_and_line_and_0_on_the_project() -> None:
    bad = subprocess.run([sys.executable, "-m", "sagaline.cli", "events", "lint",
                          str(FIXTURES)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"{FIXTURES / 'present_tense.py'}:9:" in bad.stdout
    assert f"{FIXTURES / 'unregistered.py'}:9:" in bad.stdout
    good = subprocess.run([sys.executable, "-m", "sagaline.cli", "events", "lint"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "no problems" in good.stdout
