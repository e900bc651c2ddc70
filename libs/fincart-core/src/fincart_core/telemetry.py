"""Structured JSON logs and OpenTelemetry tracing, with W3C trace context carried in NATS headers."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

# Fields a log call may pass with ``extra=`` that end up as top-level JSON keys.
LOG_FIELDS = (
    "webhook_id",
    "order_id",
    "partition",
    "status",
    "batch_size",
    "version",
    "error",
    "service",
    "trace_id",
    "span_id",
    "duration_ms",
    "subject",
    "client",
    "seq",
    "nats_server",
    "body_limit",
    "max_payload",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = format(span.trace_id, "032x")
            entry["span_id"] = format(span.span_id, "016x")
        for key in LOG_FIELDS:
            if key in record.__dict__:
                entry[key] = record.__dict__[key]
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "nats"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class IdsOnlyTracerProvider(trace.TracerProvider):
    """Spans that no exporter takes are worth only their ids: each continues its parent's trace (or starts
    one) with a fresh span id, sampled flag and trace state as the SDK's default sampler would set them, and
    records nothing. ~3x cheaper than an SDK span (ingest makes one per webhook)."""

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _IdsOnlyTracer()


class _IdsOnlyTracer(trace.NoOpTracer):
    _ids = RandomIdGenerator()

    def start_span(
        self, name: str, context: otel_context.Context | None = None, *args: Any, **kwargs: Any
    ) -> trace.Span:
        parent = trace.get_current_span(context).get_span_context()
        if not parent.is_valid:
            return trace.NonRecordingSpan(
                trace.SpanContext(
                    self._ids.generate_trace_id(),
                    self._ids.generate_span_id(),
                    is_remote=False,
                    trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
                )
            )
        flags = trace.TraceFlags(trace.TraceFlags.SAMPLED if parent.trace_flags.sampled else trace.TraceFlags.DEFAULT)
        return trace.NonRecordingSpan(
            trace.SpanContext(
                parent.trace_id,
                self._ids.generate_span_id(),
                is_remote=False,
                trace_flags=flags,
                trace_state=parent.trace_state,
            )
        )


def configure_tracing(service_name: str, exporter: str = "none", path: str = "fincart-spans.jsonl") -> trace.Tracer:
    """Install a TracerProvider. Spans always carry ids (they reach logs and NATS headers); they are
    recorded, and leave the process, only when an exporter is chosen. ``file`` appends one JSON span a
    line to ``path`` (local runs and tests: several services can share one file)."""
    if exporter == "none":
        trace.set_tracer_provider(IdsOnlyTracerProvider())
        return trace.get_tracer(service_name)
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "file":
        # line-buffered append: each span is one write of one line, whole even when processes share the file
        out = open(path, "a", buffering=1)  # noqa: SIM115 - open for the provider's lifetime
        provider.add_span_processor(
            BatchSpanProcessor(ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(indent=None) + "\n"))
        )
    elif exporter == "otlp":  # pragma: no cover - needs the optional OTLP exporter package
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return trace.get_tracer(service_name)


def inject_headers(
    headers: dict[str, str] | None = None, context: otel_context.Context | None = None
) -> dict[str, str]:
    """A trace context (default: the current one) as W3C ``traceparent``/``tracestate`` headers."""
    carrier: dict[str, str] = dict(headers or {})
    propagate.inject(carrier, context=context)
    return carrier


def extract_context(headers: Mapping[str, str] | None) -> otel_context.Context:
    """The trace context a producer put in message headers (empty context when none)."""
    return propagate.extract(headers or {})
