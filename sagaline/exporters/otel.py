"""OpenTelemetry spans: a span per saga, a child per attempt of a step or compensation.

One trace per saga, across every process that works for it. ``start()`` chooses the saga's
trace context (within the caller's span, if there is one) and records it with the saga, and
every message carries it as a task header; so each process that runs a step, however its
message was enqueued (the chain, an errback, the recovery sweep), makes the step's span a
child of the saga span. A step's span also links to the Celery instrumentation's span of
the task that ran it.

A span can only be ended by the process that started it, and a saga ends in whichever
process concludes it; so the saga span is emitted when the saga concludes, by that process,
with the span id chosen at the start (through :class:`PresetIdGenerator`), the start time
the saga was created at and the end time it concluded at. A saga that never concludes
leaves its steps' spans naming a parent that is never exported.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode

from sagaline import telemetry

HANDLER_ID = "sagaline.exporters.otel"
_SAMPLED = trace.TraceFlags(trace.TraceFlags.SAMPLED)


class PresetIdGenerator(IdGenerator):
    """Generates ids as ``inner`` does, except the ids preset for the current thread."""

    def __init__(self, inner: IdGenerator) -> None:
        """Wrap the provider's generator."""
        self.inner = inner
        self._preset = threading.local()

    @contextmanager
    def preset(self, trace_id: int, span_id: int) -> Iterator[None]:
        """The next span started in this thread, within, gets these ids."""
        self._preset.ids = (trace_id, span_id)
        try:
            yield
        finally:
            self._preset.ids = None

    def generate_span_id(self) -> int:
        """The preset span id, or a new one."""
        ids = getattr(self._preset, "ids", None)
        return ids[1] if ids else self.inner.generate_span_id()

    def generate_trace_id(self) -> int:
        """The preset trace id, or a new one."""
        ids = getattr(self._preset, "ids", None)
        return ids[0] if ids else self.inner.generate_trace_id()

    def is_trace_id_random(self) -> bool:
        """Whether the inner generator's trace ids are random (W3C level 2)."""
        return bool(self.inner.is_trace_id_random())


class JsonLinesSpanExporter(SpanExporter):
    """Appends each finished span to a file as one JSON line; safe across processes.

    For tests and debugging without a collector: each line is one ``write`` to a file
    opened for appending, so lines of several processes never interleave.
    """

    def __init__(self, path: Path) -> None:
        """Write to ``path`` (created if needed)."""
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Append the spans."""
        lines = "".join(json.dumps(span_record(span)) + "\n" for span in spans)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, lines.encode())
        finally:
            os.close(fd)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release."""


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """A finished span as plain JSON: ids in hex, the writing process's pid."""
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
        "links": [f"{link.context.span_id:016x}" for link in span.links],
        "events": [event.name for event in span.events],
        "pid": os.getpid(),
    }


class _Spans:
    """The telemetry handler: opens and ends spans as attempts start and stop."""

    def __init__(self, tracer: trace.Tracer, ids: PresetIdGenerator) -> None:
        self.tracer = tracer
        self.ids = ids
        self._open = threading.local()

    def __call__(self, event: telemetry.Event, measurements: Mapping[str, float],
                 metadata: Mapping[str, Any]) -> None:
        if event in _CONCLUSIONS:
            self._saga_span(metadata)
            return
        spans: dict[tuple[Any, ...], trace.Span] = self._open.__dict__.setdefault("spans", {})
        key = (metadata.get("saga_id"), metadata.get("role"), metadata.get("step"),
               metadata.get("attempt"))
        if event[2] == "start":
            spans[key] = self._start(event[1], metadata)
            return
        span = spans.pop(key, None)
        if span is None:
            return
        if event[2] == "stop":
            span.set_attribute("sagaline.outcome", "succeeded")
        else:
            error = metadata.get("error")
            span.set_attribute("sagaline.outcome",
                               "retrying" if metadata.get("retrying") else "failed")
            if isinstance(error, BaseException):
                span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end()

    def _start(self, kind: str, metadata: Mapping[str, Any]) -> trace.Span:
        saga = telemetry.TraceContext.parse(str(metadata.get("traceparent") or ""))
        parent: Context | None = None
        links = []
        if saga is not None:
            parent = _context_of(saga.trace_id, saga.span_id)
            current = trace.get_current_span().get_span_context()
            if current.is_valid:
                links.append(Link(current))
        return self.tracer.start_span(
            f"{kind} {metadata.get('step')}", context=parent, kind=SpanKind.INTERNAL,
            links=links, attributes={
                "sagaline.saga": str(metadata.get("saga")),
                "sagaline.saga_id": str(metadata.get("saga_id")),
                "sagaline.correlation_id": str(metadata.get("correlation_id")),
                "sagaline.step": str(metadata.get("step")),
                "sagaline.role": str(metadata.get("role")),
                "sagaline.attempt": int(metadata.get("attempt") or 0),
                "sagaline.position": int(metadata.get("position") or 0),
            },
        )

    def _saga_span(self, metadata: Mapping[str, Any]) -> None:
        saga = telemetry.TraceContext.parse(str(metadata.get("traceparent") or ""),
                                            str(metadata.get("trace_parent_id") or ""))
        if saga is None:
            return
        parent = Context()
        if saga.parent_id:
            parent = _context_of(saga.trace_id, saga.parent_id)
        status = str(metadata.get("status"))
        attributes = {
            "sagaline.saga": str(metadata.get("saga")),
            "sagaline.saga_id": str(metadata.get("saga_id")),
            "sagaline.correlation_id": str(metadata.get("correlation_id")),
            "sagaline.outcome": status,
        }
        if metadata.get("failed_step"):
            attributes["sagaline.failed_step"] = str(metadata["failed_step"])
        with self.ids.preset(int(saga.trace_id, 16), int(saga.span_id, 16)):
            span = self.tracer.start_span(
                f"saga {metadata.get('saga')}", context=parent, kind=SpanKind.INTERNAL,
                start_time=int(float(metadata.get("created_at") or 0) * 1e9),
                attributes=attributes,
            )
        if status != "completed":
            error = metadata.get("error") or {}
            span.set_status(Status(StatusCode.ERROR, f"{status}: {error.get('message', '')}"))
        span.end(end_time=int(float(metadata.get("at") or 0) * 1e9))


_CONCLUSIONS = frozenset(telemetry.CONCLUSIONS.values())


def _context_of(trace_id: str, span_id: str) -> Context:
    remote = SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True,
                         trace_flags=_SAMPLED)
    return trace.set_span_in_context(NonRecordingSpan(remote))


def sdk_provider(service_name: str = "sagaline") -> TracerProvider:
    """The global SDK tracer provider; one is made and set if none was."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    trace.set_tracer_provider(provider)
    return provider


def install(provider: TracerProvider | None = None, *, instrument_celery: bool = True) -> None:
    """Emit a span per saga and per attempt of its steps and compensations.

    Args:
        provider: The SDK provider to emit through; the global one (made if need be) when
            ``None``. Its id generator is wrapped in a :class:`PresetIdGenerator`.
        instrument_celery: Also instrument Celery (publish and run spans, and trace context
            in task headers), once per process.

    Raises:
        ValueError: It is installed already.
    """
    provider = provider or sdk_provider()
    current: IdGenerator = provider.id_generator
    ids = current if isinstance(current, PresetIdGenerator) else PresetIdGenerator(current)
    provider.id_generator = ids  # type: ignore[assignment]
    tracer = provider.get_tracer("sagaline")
    telemetry.attach(HANDLER_ID, telemetry.OPERATION_EVENTS | _CONCLUSIONS, _Spans(tracer, ids))
    instrumentor = CeleryInstrumentor()  # type: ignore[no-untyped-call]
    if instrument_celery and not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)


def uninstall() -> bool:
    """Stop emitting spans (Celery stays instrumented); ``False`` if not installed."""
    return telemetry.detach(HANDLER_ID)
