"""The Thunderline sagas from the command line: declared domains shown, started with
``sagaline run`` (its causation id recorded), and the mail written to the outbox folder
when no SMTP server is configured.
"""

from __future__ import annotations

import json
import uuid
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from sagaline import Sagaline, new_id
from tasks.gate.mail import Mailer, magic_link_mail
from tests.test_cli import sagaline


@pytest.mark.parametrize(("saga", "direction", "steps"), [
    ("user_provisioning", "gate → block → link",
     ["validate_email", "generate_token", "create_user", "provision_vault",
      "create_default_community", "send_magic_link", "emit_onboarding_event"]),
    ("upm_activation", "bolt → crown → block",
     ["load_snapshot", "validate_drift", "policy_check", "deactivate_previous",
      "activate_snapshot", "sync_adapters", "emit_activation_event"]),
])
def test_sagas_name_shows_the_domains_a_saga_crosses_and_its_steps(
        saga: str, direction: str, steps: list[str]) -> None:
    """The seed's interaction matrix, row by row: each saga declares its domains."""
    shown = sagaline("sagas", saga)
    assert shown.returncode == 0, shown.stderr
    assert direction in shown.stdout
    described = json.loads(sagaline("sagas", saga, "--json").stdout)
    assert described["domains"]["direction"] == direction
    assert [s["name"] for s in described["steps"]] == steps


def test_the_mail_step_is_the_pivot_and_has_no_compensation() -> None:
    described = json.loads(sagaline("sagas", "user_provisioning", "--json").stdout)
    mail = next(s for s in described["steps"] if s["name"] == "send_magic_link")
    assert mail["extra"]["pivot"] is True and mail["compensation"] is None
    assert "pivot: true" in sagaline("sagas", "user_provisioning").stdout


@pytest.mark.usefixtures("worker")
def test_run_starts_a_provisioning_with_its_causation_id(engine: Sagaline) -> None:
    """``sagaline run user_provisioning --causation-id ID --wait`` completes, and the run
    records ID as what triggered it.
    """
    cause = new_id()
    email = f"cli.{uuid.uuid4().hex[:8]}@example.com"
    done = sagaline("run", "user_provisioning", "--input", json.dumps({"email": email}),
                    "--causation-id", cause, "--wait", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "completed"
    assert engine.get(summary["saga_id"]).causation_id == cause
    wrong = sagaline("run", "user_provisioning", "--input", json.dumps({"email": email}),
                     "--causation-id", "not-a-uuid")
    assert wrong.returncode == 2 and "causation_id" in wrong.stderr


def test_without_an_smtp_url_the_mail_is_written_to_the_outbox_folder(tmp_path: Path) -> None:
    """No SMTP server configured: the mail, headers and all, lands in ``outbox`` as .eml."""
    mailer = Mailer()
    mailer.configure(smtp_url=None, outbox=tmp_path / "outbox", sender="a@example.com",
                     public_url="https://thunderline.example/")
    link = mailer.link("s3cret", "/communities")
    assert link == ("https://thunderline.example/auth/magic-link?token=s3cret"
                    "&redirect=%2Fcommunities")
    message = magic_link_mail(mailer, to="b@example.com", link=link,
                              headers={"X-Correlation-ID": "cid-1"})
    where = mailer.send(message)
    files = list((tmp_path / "outbox").glob("*.eml"))
    assert [str(f) for f in files] == [where]
    mail = message_from_bytes(files[0].read_bytes(), policy=policy.default)
    assert mail["To"] == "b@example.com" and mail["X-Correlation-ID"] == "cid-1"
    assert link in mail.get_body().get_content()  # type: ignore[union-attr]


def test_an_smtp_url_of_another_scheme_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="SAGALINE_SMTP_URL must start with one of"):
        Mailer().configure(smtp_url="http://mail.example", outbox=Path("x"), sender="a@b.c",
                           public_url="http://x")
