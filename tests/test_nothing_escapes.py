"""Nothing escapes, on a real worker: an action whose function ran to its end is recorded
completed and undone on rollback, never run again because of what happened after it
returned; odd errors and odd inputs get clear answers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sagaline import InvalidInputError, Sagaline, SagaStatus, StepStatus
from tests.conftest import DATA_DIR, ROOT, start_worker, stop_worker

pytestmark = pytest.mark.usefixtures("worker")


def _wait_for_log(path: Path, needle: str, timeout: float = 20.0) -> str:
    """Wait until the worker log at ``path`` holds ``needle``; return the log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if needle in text:
            return text
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} never appeared in {path}")


def test_a_returns_path_the_last_result_lacks_undoes_the_last_step_too(
    engine: Sagaline, calls: Any
) -> None:
    """The saga's ``returns`` reads a field the last step's result lacks: the last step ran,
    so it is recorded completed and undone with the first, in reverse, and ran once.
    """
    run = engine.start("t_bad_returns", {"tag": calls.tag}).wait(30)

    assert run.status is SagaStatus.COMPENSATED
    assert run.failed_step == "last"
    assert run.error is not None and run.error.type == "sagaline.errors.ResultError"
    assert "no_such_field" in run.error.message
    assert run.step("last").status is StepStatus.COMPLETED
    assert run.step("last").attempts == 1
    assert calls.read() == ["first:action", "last:action", "last:compensation",
                            "first:compensation"]


def test_a_step_returning_what_json_cannot_encode_runs_once_and_is_undone(
    engine: Sagaline, calls: Any
) -> None:
    """The step's effect happened and its return cannot be recorded: it is not retried (its
    policy would allow it), it is recorded completed and compensated, the step after it
    never runs, and the error says what went wrong.
    """
    run = engine.start("t_returns_unencodable", {"tag": calls.tag}).wait(30)

    assert run.status is SagaStatus.COMPENSATED
    assert run.failed_step == "odd"
    assert run.error is not None and run.error.type == "sagaline.errors.ResultError"
    assert "Opaque" in run.error.message
    odd = run.step("odd")
    assert odd.status is StepStatus.COMPLETED and odd.attempts == 1
    assert run.step("never").status is StepStatus.PENDING
    assert calls.read() == ["first:action", "odd:action", "odd:compensation",
                            "first:compensation"]


def test_a_final_error_with_details_json_cannot_encode_keeps_its_own_type(
    engine: Sagaline, calls: Any
) -> None:
    """A non-retryable error whose details JSON cannot encode is recorded as itself, its
    details as text, and the saga is rolled back as for any final failure.
    """
    run = engine.start("t_odd_details", {"tag": calls.tag}).wait(30)

    assert run.status is SagaStatus.COMPENSATED
    assert run.error is not None and run.error.type == "tests.support.steps.Boom"
    assert run.error.details["thing"] == "Opaque()"
    assert run.error.details["step"] == "odd"
    assert run.step("odd").attempts == 1
    assert calls.read() == ["first:action", "odd:action", "first:compensation"]


def test_a_retryable_error_with_details_json_cannot_encode_is_still_retried(
    engine: Sagaline, calls: Any
) -> None:
    """The retry decision is made on the step's own error: two attempts, as its policy says,
    then the rollback; the recorded error is the step's, not an encoding error.
    """
    run = engine.start("t_odd_details_retried", {"tag": calls.tag}).wait(30)

    assert run.status is SagaStatus.COMPENSATED
    assert run.error is not None
    assert run.error.type == "tests.support.escapes.OddFlaky"
    assert run.error.details == {"thing": "Opaque()", "count": 2}
    assert calls.read() == ["first:action", "odd:action:1", "odd:action:2",
                            "first:compensation"]


@pytest.mark.parametrize("inputs", ["a string", [("tag", "x")], 42, None, b"tag"])
def test_inputs_that_are_not_a_mapping_are_refused_and_nothing_is_recorded(
    engine: Sagaline, inputs: Any
) -> None:
    """A string, a list of pairs, a number: refused with a message saying what inputs must
    be; nothing recorded, nothing enqueued.
    """
    before = engine.store.list_ids(limit=5)
    queued = engine.store.client.llen("celery")

    with pytest.raises(InvalidInputError) as raised:
        engine.start("t_quick", inputs)

    assert "(inputs)" in str(raised.value)
    assert "must be a JSON object" in str(raised.value)
    assert type(inputs).__name__ in str(raised.value)
    assert engine.store.list_ids(limit=5) == before
    assert engine.store.client.llen("celery") <= queued


def test_deeply_nested_cli_input_exits_2_with_a_message() -> None:
    """JSON nested deeper than Python's parser goes: exit 2 and a sentence, no traceback."""
    nested = '{"a":' * 30_000 + "1" + "}" * 30_000
    result = subprocess.run(
        [sys.executable, "-m", "sagaline.cli", "--app", "tests.support.app", "run", "t_quick",
         "--input", "-"], input=nested, cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )

    assert result.returncode == 2
    assert "nested too deeply" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_message_for_a_saga_task_without_an_envelope_is_refused_by_the_worker(
    engine: Sagaline, calls: Any
) -> None:
    """``task.delay(...)`` on a saga task would run the participant with no saga record:
    the worker rejects it and logs why, and the function never runs.
    """
    task = engine.app.tasks["testing.plain"]

    sent = task.apply_async(args=[None], kwargs={"tag": calls.tag})

    log = _wait_for_log(DATA_DIR / "main.log",
                        "refused a message for saga task testing.plain without a saga "
                        f"envelope (task id {sent.id}")
    assert "start the saga instead" in log
    assert calls.read() == []
    # A direct call (a unit test calling the task) is still the plain function.
    assert task(None, tag=calls.tag) == "plain"
    assert calls.read() == ["plain"]


def test_a_worker_told_to_run_bare_messages_runs_them(engine: Sagaline, calls: Any) -> None:
    """With ``SAGALINE_RUN_BARE_MESSAGES`` (for unit tests) a worker runs such a message as
    the plain function; a saga started beside it still runs as a saga.
    """
    worker = start_worker("bare", concurrency=1, queues="bare",
                          env={"SAGALINE_RUN_BARE_MESSAGES": "true"})
    try:
        engine.app.tasks["testing.plain"].apply_async(
            args=[None], kwargs={"tag": calls.tag}, queue="bare")
        deadline = time.monotonic() + 20
        while calls.read() != ["plain"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert calls.read() == ["plain"]
    finally:
        stop_worker(worker)
    run = engine.start("t_plain", {"tag": calls.tag}).wait(30)
    assert run.status is SagaStatus.COMPLETED
    assert calls.read() == ["plain", "plain"]
