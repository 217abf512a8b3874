"""Starting a saga exactly once: an idempotency key starts one run, however often and from
however many processes it is sent, and is kept as long as its run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from sagaline import IdempotencyConflictError, InvalidInputError, Sagaline, SagaStatus
from tests.conftest import ROOT

pytestmark = pytest.mark.usefixtures("worker")


def tag() -> dict[str, str]:
    return {"tag": f"idem-{uuid.uuid4().hex[:8]}"}


def test_a_second_start_with_the_same_key_returns_the_first_run(engine: Sagaline) -> None:
    key, inputs = f"order-{uuid.uuid4()}", tag()
    first = engine.start("t_quick", inputs, idempotency_key=key)
    again = engine.start("t_quick", inputs, idempotency_key=key)
    assert again.saga_id == first.saga_id
    assert again.correlation_id == first.correlation_id
    assert first.wait(30).status is SagaStatus.COMPLETED
    later = engine.start("t_quick", inputs, idempotency_key=key)  # after it ended, too
    assert later.saga_id == first.saga_id
    store = engine.store
    ttl = store.client.ttl(f"{store.prefix}idempotency:{key}")
    assert 0 < ttl <= store.retention_s  # kept as long as the run, then gone with it
    assert engine.start("t_quick", inputs).saga_id != first.saga_id  # no key: a new run


def test_fifty_starts_at_once_with_one_key_record_one_run(engine: Sagaline) -> None:
    key, inputs = f"burst-{uuid.uuid4()}", tag()
    before = set(engine.store.list_ids(None, limit=1000))
    with ThreadPoolExecutor(50) as pool:
        ids = list(pool.map(lambda _: engine.start("t_quick", inputs,
                                                   idempotency_key=key).saga_id, range(50)))
    assert len(set(ids)) == 1
    new = set(engine.store.list_ids(None, limit=1000)) - before
    assert new == set(ids)
    assert engine.wait(ids[0], 30).status is SagaStatus.COMPLETED


def test_two_processes_starting_with_one_key_at_once_start_one_run(engine: Sagaline) -> None:
    key, inputs = f"procs-{uuid.uuid4()}", tag()
    code = ("import sys; from tests.support.app import engine; "
            "print(engine.start('t_quick', {'tag': sys.argv[2]}, "
            "idempotency_key=sys.argv[1]).saga_id)")
    processes = [subprocess.Popen([sys.executable, "-c", code, key, inputs["tag"]], cwd=ROOT,
                                  stdout=subprocess.PIPE, text=True) for _ in range(4)]
    ids = {p.communicate(timeout=120)[0].strip() for p in processes}
    assert len(ids) == 1 and all(p.returncode == 0 for p in processes)


def test_a_key_reused_with_other_inputs_is_refused_and_starts_nothing(engine: Sagaline
                                                                      ) -> None:
    key = f"reuse-{uuid.uuid4()}"
    first = engine.start("t_quick", tag(), idempotency_key=key)
    before = set(engine.store.list_ids(None, limit=1000))
    with pytest.raises(IdempotencyConflictError, match=first.saga_id):
        engine.start("t_quick", tag(), idempotency_key=key)
    with pytest.raises(IdempotencyConflictError, match="t_quick"):
        engine.start("t_dynamic", tag(), idempotency_key=key)
    assert set(engine.store.list_ids(None, limit=1000)) == before


@pytest.mark.parametrize("key", ["", "x" * 201, "line\nbreak"])
def test_a_key_that_is_not_one_is_refused_naming_the_field(engine: Sagaline, key: str) -> None:
    with pytest.raises(InvalidInputError, match="idempotency_key"):
        engine.start("t_quick", tag(), idempotency_key=key)


def test_sagaline_run_takes_an_idempotency_key() -> None:
    """The CLI: a repeat prints the first run's id; other inputs with the key exit 2."""
    from tests.test_cli import sagaline

    key, inputs = f"cli-{uuid.uuid4()}", json.dumps(tag())
    first = sagaline("run", "t_quick", "--input", inputs, "--idempotency-key", key)
    again = sagaline("run", "t_quick", "--input", inputs, "--idempotency-key", key)
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert first.stdout.strip() == again.stdout.strip()
    other = sagaline("run", "t_quick", "--input", json.dumps(tag()), "--idempotency-key", key)
    assert other.returncode == 2 and "already started saga" in other.stderr
