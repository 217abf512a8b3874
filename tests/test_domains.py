"""A saga's declared domains: described, recorded with dynamic sagas, and enforced by the
events lint (on the tasks' code and on emitted events). No worker needed; the app the
command-line tests write contacts no Redis.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel

from sagaline import (
    Domains,
    Event,
    Fallback,
    FromInput,
    Saga,
    SagaBuilder,
    Step,
    StepContext,
    Taxonomy,
    saga_task,
)
from sagaline.dynamic import saga_from_json, saga_to_json
from sagaline.events.lint import lint, lint_domains, lint_emitted
from sagaline.registry import describe_saga
from tests.conftest import ROOT

CID = "0190f5e8-7c3a-7b21-9d4e-5f6a7b8c9d0e"
HERE = Path(__file__).resolve()

TAXONOMY = """\
[events."gate.user.created"]
domain = "gate"
description = "A user was created."

[events."block.vault.provisioned"]
domain = "block"
description = "A vault was provisioned."

[events."saga.started"]
domain = "saga"
description = "A saga started."
"""


class Signup(BaseModel):
    user: str


@saga_task("domains_test.create_user")
def create_user(ctx: StepContext, user: str) -> None:
    ctx.emit("gate.user.created", {"user": user})


@saga_task("domains_test.provision_vault")
def provision_vault(ctx: StepContext, user: str) -> None:
    ctx.emit("block.vault.provisioned", {"user": user})  # crosses into block


@saga_task("domains_test.note_start")
def note_start(ctx: StepContext, user: str) -> None:
    ctx.emit("saga.started", {"user": user})  # the engine's domain: always allowed


@saga_task("domains_test.quiet")
def quiet(ctx: StepContext, user: str) -> None:
    return None


USER = {"user": FromInput("user")}


def gated(*steps: Step, domains: Domains | None = None) -> Saga:
    """A saga ``gated`` over ``steps`` that declares the gate domain (or ``domains``)."""
    return Saga("gated", inputs=Signup, steps=list(steps),
                domains=domains or Domains("gate", reason="signs people up"))


def line_of(marker: str) -> int:
    """The line of this file that holds ``marker``."""
    lines = HERE.read_text(encoding="utf-8").splitlines()
    return next(n for n, line in enumerate(lines, start=1) if marker in line)


@pytest.fixture
def taxonomy(tmp_path: Path) -> Taxonomy:
    path = tmp_path / "events.toml"
    path.write_text(TAXONOMY, encoding="utf-8")
    return Taxonomy.load(path)


def test_domains_read_in_their_direction_and_allow_the_engines_own() -> None:
    domains = Domains("gate", "block", "link", reason="a user gets a vault, then a link")

    assert str(domains) == "gate → block → link"
    assert domains.allows("block") and domains.allows("saga")
    assert not domains.allows("crown")
    assert domains.describe() == {"path": ["gate", "block", "link"],
                                  "direction": "gate → block → link",
                                  "reason": "a user gets a vault, then a link"}


def test_a_saga_is_described_with_its_domains_or_none() -> None:
    declared = describe_saga(gated(Step("create_user", create_user, args=USER),
                                   domains=Domains("gate", "block", reason="r")))
    undeclared = describe_saga(Saga("plain", inputs=Signup,
                                    steps=[Step("create_user", create_user, args=USER)]))

    assert declared.domains == {"path": ["gate", "block"], "direction": "gate → block",
                                "reason": "r"}
    assert declared.model_dump(mode="json")["domains"]["direction"] == "gate → block"
    assert undeclared.domains is None


def test_an_assembled_saga_records_its_domains_and_reads_them_back() -> None:
    """A dynamic saga's JSON (recorded with each run) round-trips its domains."""
    builder = SagaBuilder("assembled", inputs=Signup,
                          domains=Domains("gate", "block", reason="to the vault"))
    saga = builder.add(Step("create_user", create_user, args=USER)).build()
    tasks = {create_user.name: create_user}

    raw = json.loads(json.dumps(saga_to_json(saga)))
    back = saga_from_json(raw, tasks)

    assert raw["domains"]["path"] == ["gate", "block"]
    assert back.domains == Domains("gate", "block", reason="to the vault")
    plain = SagaBuilder("assembled", inputs=Signup).add(
        Step("create_user", create_user, args=USER)).build()
    assert saga_to_json(plain)["domains"] is None
    recorded_before_domains = {k: v for k, v in saga_to_json(plain).items() if k != "domains"}
    assert saga_from_json(recorded_before_domains, tasks).domains is None


def test_lint_refuses_a_step_that_emits_an_event_of_an_undeclared_domain(
        taxonomy: Taxonomy) -> None:
    """Given a saga declaring only ``gate`` whose second step emits a ``block`` event,
    the lint names the file and line, the saga, the step, the event, its domain, the
    declared path and the fix.
    """
    saga = gated(Step("create_user", create_user, args=USER),
                 Step("provision_vault", provision_vault, args=USER))

    problems = lint_domains(taxonomy, [saga])

    assert len(problems) == 1, problems
    problem = problems[0]
    assert Path(problem.path).resolve() == HERE
    assert problem.line == line_of('ctx.emit("block.vault.provisioned"')
    assert problem.message == (
        "saga 'gated', step 'provision_vault' (action domains_test.provision_vault) emits "
        "'block.vault.provisioned' of domain 'block', which the saga does not declare "
        "(domains: gate); add 'block' to the saga's Domains(...) if it crosses into that "
        "domain, or emit an event of a domain it declares")
    assert str(problem).startswith(f"{problem.path}:{problem.line}: saga 'gated'")


def test_lint_passes_a_saga_whose_steps_emit_only_its_domains_and_the_engines(
        taxonomy: Taxonomy) -> None:
    saga = gated(Step("create_user", create_user, args=USER),
                 Step("note_start", note_start, args=USER))
    crossing = gated(Step("create_user", create_user, args=USER),
                     Step("provision_vault", provision_vault, args=USER),
                     domains=Domains("gate", "block"))
    undeclared = Saga("free", inputs=Signup,
                      steps=[Step("provision_vault", provision_vault, args=USER)])

    assert lint_domains(taxonomy, [saga, crossing, undeclared]) == []


def test_lint_reads_the_fallback_and_its_compensation_too(taxonomy: Taxonomy) -> None:
    saga = gated(Step("create_user", quiet, args=USER,
                      fallback=Fallback(create_user, compensation=provision_vault,
                                        args=USER, compensation_args=USER)))

    problems = lint_domains(taxonomy, [saga])

    assert [p.message.split(" emits ")[0] for p in problems] == [
        "saga 'gated', step 'create_user' (fallback compensation "
        "domains_test.provision_vault)"]


def test_lint_refuses_an_emitted_event_of_a_domain_its_saga_does_not_declare(
        taxonomy: Taxonomy, tmp_path: Path) -> None:
    """An emitted event's saga is its ``meta.saga``: a step's event of another domain is
    refused; the engine's own events, and events of sagas that declare nothing, pass.
    """
    def event(name: str, saga: str) -> str:
        return Event.new(name, {"user": "u"}, correlation_id=CID, source="domains_test.x",
                         meta={"saga": saga, "step": "provision_vault"}).model_dump_json()

    emitted = tmp_path / "emitted.jsonl"
    emitted.write_text("\n".join([
        event("saga.started", "gated"), event("gate.user.created", "gated"),
        event("block.vault.provisioned", "free"), event("block.vault.provisioned", "gated"),
    ]) + "\n", encoding="utf-8")
    saga = gated(Step("create_user", create_user, args=USER))

    problems = lint_emitted(taxonomy, emitted, [saga])

    assert [(p.line, p.message) for p in problems] == [(4, (
        "emitted event: block.vault.provisioned (domain 'block') came from saga 'gated', "
        "step 'provision_vault', which declares only gate; add 'block' to the saga's "
        "Domains(...) if it crosses into that domain, or emit an event of a domain it "
        "declares"))]
    assert lint_emitted(taxonomy, emitted) == []


def test_lint_applies_the_domain_rule_to_the_sagas_it_is_given(
        taxonomy: Taxonomy) -> None:
    saga = gated(Step("provision_vault", provision_vault, args=USER))
    assert taxonomy.path is not None

    assert lint(taxonomy.path, [], sagas=[saga])[0].line == line_of(
        'ctx.emit("block.vault.provisioned"')
    assert lint(taxonomy.path, []) == []


# -- through the command line, with an app of its own (no Redis is contacted) ---------------

APP = '''\
"""An app whose saga declares only the gate domain, yet a step emits a block event."""

import redis
from celery import Celery
from pydantic import BaseModel

from sagaline import Domains, FromInput, RedisStore, Saga, Sagaline, Step, saga_task


class Signup(BaseModel):
    user: str


@saga_task("gated_app.create_user")
def create_user(ctx, user):
    ctx.emit("gate.user.created", {"user": user})


@saga_task("gated_app.provision_vault")
def provision_vault(ctx, user):
    ctx.emit("block.vault.provisioned", {"user": user})


app = Celery("gated_app")
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                result_accept_content=["json"], event_serializer="json")
USER = {"user": FromInput("user")}
gated = Saga("gated", inputs=Signup, domains=Domains("gate", reason="signs people up"),
             steps=[Step("create_user", create_user, args=USER),
                    Step("provision_vault", provision_vault, args=USER)])
engine = Sagaline(app, RedisStore(redis.Redis.from_url("redis://127.0.0.1:9/0")), [gated])
'''


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``sagaline --app gated_app ARGS`` in ``tmp_path``, where the app is written."""
    (tmp_path / "gated_app.py").write_text(textwrap.dedent(APP), encoding="utf-8")
    (tmp_path / "events.toml").write_text(TAXONOMY, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    return subprocess.run([sys.executable, "-m", "sagaline.cli", "--app", "gated_app", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)


def test_sagas_name_shows_the_declared_domains_and_json_includes_them(
        tmp_path: Path) -> None:
    table = run_cli(tmp_path, "sagas", "gated")
    as_json = run_cli(tmp_path, "sagas", "gated", "--json")

    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if line.startswith("domains"))
    assert row.split(None, 1)[1].rstrip() == "gate — signs people up"
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["domains"] == {
        "path": ["gate"], "direction": "gate", "reason": "signs people up"}


def test_events_lint_command_fails_on_a_step_emitting_outside_its_domains(
        tmp_path: Path) -> None:
    refused = run_cli(tmp_path, "events", "lint", "gated_app.py")
    skipped = run_cli(tmp_path, "events", "lint", "--no-sagas", "gated_app.py")

    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert ("gated_app.py:21: saga 'gated', step 'provision_vault' (action "
            "gated_app.provision_vault) emits 'block.vault.provisioned' of domain 'block'"
            ) in refused.stdout
    assert "1 event problem(s)" in refused.stderr
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert "no problems" in skipped.stdout
