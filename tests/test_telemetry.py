"""Telemetry: lifecycle hooks, transition logs with correlation ids, Prometheus metrics
served by a worker and OpenTelemetry spans, all from real workers on real Redis.

Two workers share each ``t_across`` run: ``tele-a`` takes the queue of its first and last
steps, ``tele-b`` that of the middle one, so every run crosses processes.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client.parser import text_string_to_metric_families

from sagaline import SagaHandle, Sagaline, SagaStatus, new_id, telemetry
from tests.conftest import DATA_DIR, start_worker, stop_worker

pytestmark = pytest.mark.usefixtures("worker")

SPANS = DATA_DIR / "spans.jsonl"


class Heard:
    """A handler that keeps what it hears."""

    def __init__(self) -> None:
        self.events: list[tuple[telemetry.Event, dict[str, float], dict[str, Any]]] = []

    def __call__(self, event: telemetry.Event, measurements: Mapping[str, float],
                 metadata: Mapping[str, Any]) -> None:
        self.events.append((event, dict(measurements), dict(metadata)))


def eventually(check: Any, timeout: float = 60.0) -> Any:
    """Poll ``check`` until it returns something truthy; what it returned."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def main_log() -> str:
    """What the session's worker logged."""
    return (DATA_DIR / "main.log").read_text()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- hooks, in this process ----------------------------------------------------------------


def test_a_handler_hears_each_saga_start_with_its_ids_until_detached(
        engine: Sagaline, calls: Any) -> None:
    heard = Heard()
    telemetry.attach("test-start", [telemetry.SAGA_START], heard)
    try:
        cid = str(uuid.uuid4())
        handle = engine.start("t_quick", {"tag": calls.tag}, correlation_id=cid)
    finally:
        assert telemetry.detach("test-start") is True
    engine.start("t_quick", {"tag": calls.tag}).wait(30)

    assert len(heard.events) == 1
    event, measurements, metadata = heard.events[0]
    assert event == ("sagaline", "saga", "start")
    assert metadata["saga"] == "t_quick"
    assert metadata["saga_id"] == handle.saga_id
    assert metadata["correlation_id"] == cid
    assert metadata["total"] == 1
    recorded = telemetry.TraceContext.parse(metadata["traceparent"])
    assert recorded is not None
    assert engine.store.correlation_of(handle.saga_id) == (cid, metadata["traceparent"])
    assert measurements["system_time_s"] > 0
    assert handle.wait(30).status is SagaStatus.COMPLETED
    assert telemetry.detach("test-start") is False


def test_a_failing_handler_is_logged_and_detached_and_the_saga_goes_on(
        engine: Sagaline, calls: Any, caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: telemetry.Event, measurements: Mapping[str, float],
               metadata: Mapping[str, Any]) -> None:
        raise RuntimeError("broken handler")

    telemetry.attach("test-broken", [telemetry.SAGA_START], broken)
    with caplog.at_level(logging.ERROR, logger="sagaline.telemetry"):
        handle = engine.start("t_quick", {"tag": calls.tag})

    assert "test-broken" not in telemetry.attached()
    assert "telemetry handler 'test-broken' failed on sagaline saga start" in caplog.text
    assert "RuntimeError: broken handler" in caplog.text
    assert handle.wait(30).status is SagaStatus.COMPLETED


def test_attach_refuses_a_misspelled_event_and_a_taken_id() -> None:
    heard = Heard()
    with pytest.raises(ValueError, match="sagaline emits no event"):
        telemetry.attach("test-typo", [("sagaline", "saga", "completed")], heard)
    telemetry.attach("test-taken", [telemetry.SAGA_START], heard)
    try:
        with pytest.raises(ValueError, match="attached already"):
            telemetry.attach("test-taken", [telemetry.STEP_STOP], heard)
    finally:
        telemetry.detach("test-taken")


def test_a_cancel_is_heard_in_the_process_that_made_it(engine: Sagaline, calls: Any) -> None:
    """The status move is reported by the store to whoever made it: here, the caller of
    cancel; the rollback then concludes in the worker.
    """
    handle = engine.start("t_cancellable", {"tag": calls.tag})
    assert eventually(lambda: "long:start" in calls.read(), timeout=30)
    heard = Heard()
    telemetry.attach("test-cancel", [telemetry.SAGA_COMPENSATE, telemetry.SAGA_FAIL,
                                     telemetry.SAGA_CANCELLED], heard)
    try:
        engine.cancel(handle.saga_id)
    finally:
        telemetry.detach("test-cancel")

    assert [e for e, _, _ in heard.events] == [telemetry.SAGA_COMPENSATE]
    metadata = heard.events[0][2]
    assert metadata["saga_id"] == handle.saga_id
    assert metadata["reason"] == "cancelled"
    assert metadata["status"] == "compensating"
    assert handle.wait(30).status is SagaStatus.CANCELLED
    # The worker that concluded it logged the end.
    assert eventually(lambda: f"[saga {handle.saga_id}] t_cancellable cancelled in " in main_log())


def test_a_retried_rollback_is_heard_as_compensating_again_not_as_a_new_failure(
        engine: Sagaline, calls: Any) -> None:
    run = engine.start("t_undo_fails", {"tag": calls.tag}).wait(30)
    assert run.status is SagaStatus.COMPENSATION_FAILED
    heard = Heard()
    telemetry.attach("test-retry", [telemetry.SAGA_FAIL, telemetry.SAGA_COMPENSATE], heard)
    try:
        engine.supervisor.retry_compensation(run.saga_id)
    finally:
        telemetry.detach("test-retry")

    assert [(e, m["reason"], m["previous"]) for e, _, m in heard.events] == [
        (telemetry.SAGA_COMPENSATE, "retry", "compensation_failed")
    ]
    assert engine.wait(run.saga_id, 30).status is SagaStatus.COMPENSATION_FAILED
    ended = f"[saga {run.saga_id}] t_undo_fails compensation_failed in "
    assert eventually(lambda: main_log().count(ended) == 2)  # the first end, and the retry's


def test_a_saga_that_could_not_be_enqueued_is_heard_abandoned(engine: Sagaline) -> None:
    saga_id, cid = new_id(), str(uuid.uuid4())
    trace = telemetry.TraceContext.new()
    assert engine.store.create(saga_id, name="t_quick", correlation_id=cid, causation_id=None,
                               inputs={"tag": "x"}, plan=["only"], trace=trace)
    heard = Heard()
    telemetry.attach("test-abandon", telemetry.EVENTS, heard)
    try:
        assert engine.store.abandon(saga_id, {"type": "OSError", "message": "broker down"})
    finally:
        telemetry.detach("test-abandon")
    ((event, measurements, metadata),) = heard.events
    assert event == telemetry.SAGA_ABANDON
    assert (metadata["saga_id"], metadata["correlation_id"]) == (saga_id, cid)
    assert metadata["traceparent"] == trace.traceparent
    assert metadata["status"] == "failed"
    assert metadata["error"]["message"] == "broker down"
    assert measurements["duration_s"] >= 0


def test_a_saga_started_within_a_span_joins_its_trace() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("web request") as span:
        trace = telemetry.TraceContext.new()
    context = span.get_span_context()
    assert trace.trace_id == f"{context.trace_id:032x}"
    assert trace.parent_id == f"{context.span_id:016x}"
    assert trace.span_id != trace.parent_id
    outside = telemetry.TraceContext.new()
    assert outside.parent_id == "" and outside.trace_id != trace.trace_id
    assert telemetry.TraceContext.parse(outside.traceparent) == outside


def test_a_cancelled_saga_whose_undo_is_retried_is_not_counted_failed_again() -> None:
    """The record still says cancel_requested; the move from compensation_failed decides."""
    heard = Heard()
    telemetry.attach("test-moves", [telemetry.SAGA_FAIL, telemetry.SAGA_COMPENSATE], heard)
    info = {"saga": "s", "correlation_id": "c", "traceparent": "", "trace_parent_id": "",
            "created_at": "1", "at": "2", "failed_step": "", "error": "", "intent": "compensated",
            "cancel_requested": "1", "plan": "[]"}
    try:
        telemetry.announce_moves("id", ["compensation_failed>compensating"], info)
        telemetry.announce_moves("id", ["running>compensating"], info)
    finally:
        telemetry.detach("test-moves")
    assert [(e, m["reason"]) for e, _, m in heard.events] == [
        (telemetry.SAGA_COMPENSATE, "retry"),
        (telemetry.SAGA_FAIL, "deadline"),
        (telemetry.SAGA_COMPENSATE, "deadline"),
    ]


# -- exporters, from two workers --------------------------------------------------------------


@dataclass
class TelemetryRun:
    """Runs of ``t_across`` on the two telemetry workers, and where those serve metrics."""

    retried: SagaHandle
    succeeded: list[SagaHandle]
    compensated: list[SagaHandle]
    ports: tuple[int, int]
    tag: str

    @property
    def all(self) -> list[SagaHandle]:
        return [self.retried, *self.succeeded, *self.compensated]


@pytest.fixture(scope="module")
def telemetry_run(engine: Sagaline, worker: Any) -> Iterator[TelemetryRun]:
    """Given two workers with metrics and spans on, when six sagas run: one whose middle
    step fails once and is retried, three that succeed, two that fail at their last step
    and are compensated.
    """
    ports = (free_port(), free_port())
    spans = {"SAGALINE_OTEL": "true", "SAGALINE_OTEL_SPANS_FILE": str(SPANS)}
    workers = [
        start_worker("tele-a", 2, queues="tele-a",
                     env={**spans, "SAGALINE_METRICS_PORT": str(ports[0])}),
        start_worker("tele-b", 1, queues="tele-b",
                     env={**spans, "SAGALINE_METRICS_PORT": str(ports[1])}),
    ]
    tag = f"telemetry-{time.monotonic_ns()}"
    try:
        engine.store.inject_fault("t_across", "there", times=1)
        retried = engine.start("t_across", {"tag": tag})
        assert retried.wait(60).status is SagaStatus.COMPLETED
        engine.store.clear_faults()
        succeeded = [engine.start("t_across", {"tag": tag}) for _ in range(3)]
        assert [h.wait(60).status for h in succeeded] == [SagaStatus.COMPLETED] * 3
        engine.store.inject_fault("t_across", "back")
        compensated = [engine.start("t_across", {"tag": tag}) for _ in range(2)]
        assert [h.wait(60).status for h in compensated] == [SagaStatus.COMPENSATED] * 2
        engine.store.clear_faults()
        yield TelemetryRun(retried, succeeded, compensated, ports, tag)
    finally:
        engine.store.clear_faults()
        for process in workers:
            stop_worker(process)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample served on ``port``, by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text) for sample in family.samples
    }


def across_counts(run: TelemetryRun) -> dict[str, float]:
    """The t_across counters and step-duration counts, summed over both workers."""
    total: Counter[str] = Counter()
    for port in run.ports:
        for (name, labels), value in scrape(port).items():
            named = dict(labels)
            if named.get("saga") != "t_across":
                continue
            if name.startswith("sagaline_sagas_") and name.endswith("_total"):
                total[name] += value
            elif name == "sagaline_step_duration_seconds_count":
                total[f"{named['step']}:{named['role']}:{named['outcome']}"] += value
    return dict(total)


def test_metrics_scraped_from_the_workers_show_the_counts_of_the_run(
        telemetry_run: TelemetryRun) -> None:
    expected = {
        "sagaline_sagas_started_total": 6,
        "sagaline_sagas_completed_total": 4,
        "sagaline_sagas_failed_total": 2,
        "sagaline_sagas_compensated_total": 2,
        "here:action:succeeded": 6,
        "there:action:succeeded": 6,
        "there:action:failed": 1,
        "back:action:succeeded": 4,
        "back:action:failed": 2,
        "there:compensation:succeeded": 2,
        "here:compensation:succeeded": 2,
    }
    # A saga's waiters are told as its final state is written; its worker counts just after.
    counts = eventually(lambda: (c := across_counts(telemetry_run)) == expected and c)
    assert counts == expected, across_counts(telemetry_run)
    # A worker started by mistake on a port in use serves nothing, and leaves the counts of
    # the worker that holds the port alone.
    intruder = start_worker("tele-c", 1, queues="tele-c",
                            env={"SAGALINE_METRICS_PORT": str(telemetry_run.ports[0])})
    stop_worker(intruder)
    assert (f"metrics not served: port {telemetry_run.ports[0]}: [Errno 98] Address already "
            "in use") in (DATA_DIR / "tele-c.log").read_text()
    assert across_counts(telemetry_run) == expected


def expected_log_lines(run: TelemetryRun) -> list[tuple[str, str]]:
    """(worker, text) of lines the run must have logged."""
    expected = []
    for handle in run.all:
        saga, cid = handle.saga_id, handle.correlation_id
        expected += [
            ("tele-a", f"[saga {saga}] step 1/3 here succeeded in "),
            # A participant's own line, which names no saga, carries the ids too.
            ("tele-a", f"chatty step says hello [saga {saga} correlation {cid}]"),
        ]
    retried = run.retried
    expected += [
        ("tele-b", f"[saga {retried.saga_id}] step 2/3 there failed in "),
        ("tele-b", f"InjectedFaultError: injected fault; retrying "
                   f"(correlation {retried.correlation_id})"),
        ("tele-b", f"[saga {retried.saga_id}] step 2/3 there succeeded on attempt 2 in "),
        ("tele-a", f"[saga {retried.saga_id}] t_across completed in "),
    ]
    for handle in run.compensated:
        expected += [
            # Celery's own line about the task, written after the step, names the saga too.
            ("tele-a", f"raised unexpected: InjectedFaultError('injected fault') "
                       f"[saga {handle.saga_id} correlation {handle.correlation_id}]"),
            ("tele-a", f"[saga {handle.saga_id}] t_across failed at back: InjectedFaultError"),
            ("tele-b", f"[saga {handle.saga_id}] compensation 2/3 there succeeded in "),
            ("tele-a", f"[saga {handle.saga_id}] t_across compensated in "),
        ]
    return expected


def test_every_transition_is_one_log_line_with_the_correlation_id(
        telemetry_run: TelemetryRun) -> None:
    def logs() -> dict[str, str]:
        return {name: (DATA_DIR / f"{name}.log").read_text() for name in ("tele-a", "tele-b")}

    def missing() -> list[tuple[str, str]]:
        text = logs()
        return [(name, line) for name, line in expected_log_lines(telemetry_run)
                if line not in text[name]]

    # Waiters are told as a saga's final state is written; its worker logs just after.
    assert eventually(lambda: not missing()), missing()
    text = logs()["tele-a"] + logs()["tele-b"]
    for handle in telemetry_run.all:
        lines = [line for line in text.splitlines() if f"[saga {handle.saga_id}]" in line]
        assert len(lines) >= 4  # three steps and the end (starts are DEBUG)
        assert all(f"correlation {handle.correlation_id}" in line for line in lines), lines
    # Inputs and results (the tag, which chatty returns) never reach a log.
    assert telemetry_run.tag not in text


def read_spans() -> list[dict[str, Any]]:
    return [json.loads(line) for line in SPANS.read_text().splitlines()] if SPANS.exists() \
        else []


def spans_of(saga_id: str, spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in spans if s["attributes"].get("sagaline.saga_id") == saga_id]


def test_spans_form_one_trace_per_saga_across_the_worker_processes(
        engine: Sagaline, telemetry_run: TelemetryRun) -> None:
    expected = {
        telemetry_run.retried.saga_id: ["saga t_across", "step back", "step here",
                                        "step there", "step there"],
        **{h.saga_id: ["saga t_across", "step back", "step here", "step there"]
           for h in telemetry_run.succeeded},
        **{h.saga_id: ["compensation here", "compensation there", "saga t_across",
                       "step back", "step here", "step there"]
           for h in telemetry_run.compensated},
    }

    def all_written() -> list[dict[str, Any]]:
        spans = read_spans()
        done = all(sorted(s["name"] for s in spans_of(saga_id, spans)) == names
                   for saga_id, names in expected.items())
        return spans if done else []

    spans = eventually(all_written)
    assert spans, {i: sorted(s["name"] for s in spans_of(i, read_spans())) for i in expected}
    by_id = {s["span_id"]: s for s in spans}
    traces = set()
    for handle in telemetry_run.all:
        mine = spans_of(handle.saga_id, spans)
        _, traceparent = engine.store.correlation_of(handle.saga_id)
        recorded = telemetry.TraceContext.parse(traceparent)
        assert recorded is not None
        # One trace per saga, whose root is the saga span with the id recorded at start.
        assert {s["trace_id"] for s in mine} == {recorded.trace_id}
        traces.add(recorded.trace_id)
        (root,) = [s for s in mine if s["name"] == "saga t_across"]
        assert root["span_id"] == recorded.span_id and root["parent_id"] is None
        assert root["attributes"]["sagaline.correlation_id"] == handle.correlation_id
        steps = [s for s in mine if s is not root]
        assert all(s["parent_id"] == root["span_id"] for s in steps)
        assert root["start_ns"] <= min(s["start_ns"] for s in steps)
        assert root["end_ns"] >= max(s["end_ns"] for s in steps)
        # The steps ran in two worker processes (two workers, one per queue).
        assert len({s["pid"] for s in steps}) >= 2
        assert {s["pid"] for s in steps if s["name"] == "step there"}.isdisjoint(
            {s["pid"] for s in steps if s["name"] == "step here"})
        # Each step's span links to the Celery instrumentation's span of its task, which is
        # in the saga's trace too.
        for step in steps:
            (linked,) = step["links"]
            assert by_id[linked]["name"].startswith("run/")
            assert by_id[linked]["trace_id"] == recorded.trace_id
    assert len(traces) == 6
    retried = spans_of(telemetry_run.retried.saga_id, spans)
    statuses = sorted((s["attributes"]["sagaline.attempt"], s["status"],
                       s["attributes"]["sagaline.outcome"])
                      for s in retried if s["name"] == "step there")
    assert statuses == [(1, "ERROR", "retrying"), (2, "UNSET", "succeeded")]
    for handle in telemetry_run.compensated:
        mine = spans_of(handle.saga_id, spans)
        (root,) = [s for s in mine if s["name"] == "saga t_across"]
        assert root["attributes"]["sagaline.outcome"] == "compensated"
        assert root["status"] == "ERROR"
        (back,) = [s for s in mine if s["name"] == "step back"]
        assert back["events"] == ["exception"]
