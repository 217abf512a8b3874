"""User provisioning (Gate → Block → Link) end to end, on SQLite and on PostgreSQL: a real
worker, real Redis, a real SMTP server on loopback, every effect read back from the database.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from sagaline import InvalidInputError, RedisStore, SagaStatus, new_id
from tasks.db import utcnow
from tasks.gate.models import MagicLinkToken
from tasks.gate.tokens import InvalidTokenError, redeem, secret_hash
from tests.support.smtp import Inbox
from tests.support.thunderline import Backend, allocated, new_email, provisioning_effects

SAGA = "user_provisioning"
NOTHING = {"users": 0, "live_tokens": 0, "vaults": 0, "memberships": 0}

#: For a failure at each step up to the mail (the pivot): the compensations that run, in
#: order. The failed step's own compensation never runs.
UNDONE_WHEN_FAILING = {
    "validate_email": [],
    "generate_token": [],
    "create_user": ["revoke_token"],
    "provision_vault": ["delete_user", "revoke_token"],
    "create_default_community": ["deprovision_vault", "delete_user", "revoke_token"],
    "send_magic_link": ["remove_membership", "deprovision_vault", "delete_user",
                        "revoke_token"],
}


def link_secret(body: str) -> tuple[str, str]:
    """The secret and the redirect of the magic link in a mail's body."""
    link = next(line for line in body.splitlines() if "/auth/magic-link?" in line)
    query = parse_qs(urlsplit(link).query)
    return query["token"][0], query["redirect"][0]


def test_a_user_is_provisioned_and_mailed_a_working_link(backend: Backend, inbox: Inbox
                                                         ) -> None:
    """Given a new address, the run completes with a user, a 1 GiB vault and a membership,
    and the mail reaches the SMTP server with the flow's id and a link that signs in once.
    """
    email = new_email()
    handle = backend.engine.start(SAGA, {"email": email, "magic_link_redirect": "/welcome"})
    run = handle.wait(timeout=60)
    assert run.status is SagaStatus.COMPLETED, run.error
    assert set(run.result) == {"user_id", "vault_id"}
    assert provisioning_effects(backend.db, run) == {
        "users": 1, "live_tokens": 1, "tokens": 1, "vaults": 1, "memberships": 1}

    mail = inbox.wait_for(email)
    assert mail["X-Correlation-ID"] == run.correlation_id
    assert mail["X-Causation-ID"]
    secret, redirect = link_secret(mail.get_content())
    assert redirect == "/welcome"
    with backend.db.session() as session:
        token = session.scalars(select(MagicLinkToken).where(
            MagicLinkToken.saga_key.like(f"{run.saga_id}:%"))).one()
        assert token.secret_hash == secret_hash(secret)
        assert secret not in repr(vars(token))  # stored only as its hash
        lifetime = token.expires_at - token.created_at
    assert lifetime == timedelta(hours=1)
    assert secret not in run.model_dump_json()  # nor in the saga's record
    assert redeem(secret, backend.db) == run.result["user_id"]
    with pytest.raises(InvalidTokenError, match="already used"):
        redeem(secret, backend.db)


def test_a_magic_link_stops_working_when_it_expires_or_is_revoked(backend: Backend,
                                                                  inbox: Inbox) -> None:
    """A link past its hour, or revoked, signs no one in; an unknown one neither."""
    emails = [new_email(), new_email()]
    runs = [backend.engine.start(SAGA, {"email": e}).wait(timeout=60) for e in emails]
    assert [r.status for r in runs] == [SagaStatus.COMPLETED] * 2
    secrets = [link_secret(inbox.wait_for(e).get_content())[0] for e in emails]
    with backend.db.session() as session:
        expired, revoked = (session.scalars(select(MagicLinkToken).where(
            MagicLinkToken.saga_key.like(f"{r.saga_id}:%"))).one() for r in runs)
        expired.expires_at = utcnow() - timedelta(seconds=1)
        revoked.revoked_at = utcnow()
    with pytest.raises(InvalidTokenError, match="expired"):
        redeem(secrets[0], backend.db)
    with pytest.raises(InvalidTokenError, match="revoked"):
        redeem(secrets[1], backend.db)
    with pytest.raises(InvalidTokenError, match="not valid"):
        redeem("no-such-secret", backend.db)


@pytest.mark.parametrize("failing", list(UNDONE_WHEN_FAILING))
def test_a_failure_at_any_step_up_to_the_mail_leaves_nothing_behind(
        backend: Backend, faults: RedisStore, inbox: Inbox, failing: str) -> None:
    """When step ``failing`` fails for good, every completed step is undone, last first (the
    membership too, which the seed left in place), the failed step's undo does not run, and
    no mail goes out.
    """
    faults.inject_fault(SAGA, failing, message=f"{failing} is down")
    before = allocated(backend.db)
    email = new_email()
    run = backend.engine.start(SAGA, {"email": email}).wait(timeout=60)
    assert run.status is SagaStatus.COMPENSATED, run.error
    assert run.error is not None and f"{failing} is down" in run.error.message
    assert run.compensations == UNDONE_WHEN_FAILING[failing]
    effects = provisioning_effects(backend.db, run)
    assert {k: effects[k] for k in NOTHING} == NOTHING
    assert allocated(backend.db) == before
    time.sleep(0.2)
    assert inbox.to(email) == []


def test_the_announcement_after_the_mail_is_retried_never_rolled_back(
        backend: Backend, faults: RedisStore, inbox: Inbox) -> None:
    """The mail is the pivot: when the step after it fails, it is retried until it goes
    through, and nothing is undone; the mail went out once.
    """
    faults.inject_fault(SAGA, "emit_onboarding_event", times=2)
    email = new_email()
    run = backend.engine.start(SAGA, {"email": email}).wait(timeout=60)
    assert run.status is SagaStatus.COMPLETED, run.error
    assert run.step("emit_onboarding_event").attempts == 3
    assert run.compensations == []
    assert len(inbox.to(email)) == 1


def test_an_address_already_taken_fails_at_create_user_and_revokes_the_token(
        backend: Backend) -> None:
    """A second provisioning of one address fails non-retryably and undoes its token."""
    email = new_email()
    first = backend.engine.start(SAGA, {"email": email}).wait(timeout=60)
    second = backend.engine.start(SAGA, {"email": email}).wait(timeout=60)
    assert first.status is SagaStatus.COMPLETED
    assert second.status is SagaStatus.COMPENSATED
    assert second.error is not None and "already exists" in second.error.message
    assert second.step("create_user").attempts == 1
    assert second.compensations == ["revoke_token"]
    assert provisioning_effects(backend.db, second)["live_tokens"] == 0


@pytest.mark.parametrize(("inputs", "field"), [
    ({"email": "not an address"}, "email"),
    ({}, "email"),
    ({"email": "a@example.com", "magic_link_redirect": "https://evil.example"},
     "magic_link_redirect"),
])
def test_bad_inputs_are_refused_naming_the_field_before_anything_is_recorded(
        backend: Backend, inputs: dict[str, str], field: str) -> None:
    before = backend.engine.store.list_ids(None, limit=1)
    with pytest.raises(InvalidInputError, match=field):
        backend.engine.start(SAGA, inputs)
    assert backend.engine.store.list_ids(None, limit=1) == before


def test_every_event_of_the_flow_carries_the_trigger_it_was_started_by(
        backend: Backend) -> None:
    """The causation id given at start is the cause of ``saga.started`` and rides in every
    event of the run (the seed's sagas set none), including ``user.onboarding.completed``
    (the seed's ``user.onboarding.complete`` was off the taxonomy).
    """
    cause = new_id()
    handle = backend.engine.start(SAGA, {"email": new_email()}, causation_id=cause)
    assert handle.wait(timeout=60).status is SagaStatus.COMPLETED
    bus = backend.engine.bus
    assert bus is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        events = list({e.id: e for e in bus.read()
                       if e.correlation_id == handle.correlation_id}.values())
        if any(e.name == "saga.completed" for e in events):
            break
        time.sleep(0.1)
    names = [e.name for e in events]
    assert "user.onboarding.completed" in names and "gate.magic_link.sent" in names
    started = next(e for e in events if e.name == "saga.started")
    assert started.causation_id == cause
    assert all(e.meta.get("trigger_id") == cause for e in events), [
        (e.name, e.meta) for e in events if e.meta.get("trigger_id") != cause]
    assert not any(re.fullmatch(r"user\.onboarding\.complete", n) for n in names)
