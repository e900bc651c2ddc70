"""Spans without an exporter: ids only, continuing the caller's trace as the SDK would."""

from __future__ import annotations

from fincart_core.telemetry import IdsOnlyTracerProvider, extract_context, inject_headers
from opentelemetry import trace

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT = f"00-{TRACE_ID}-b7ad6b7169203331"

tracer = IdsOnlyTracerProvider().get_tracer("test")


def traceparent_within(headers: dict[str, str]) -> tuple[str, str, str]:
    with tracer.start_as_current_span("work", context=extract_context(headers)) as span:
        assert not span.is_recording()
        _, trace_id, span_id, flags = inject_headers()["traceparent"].split("-")
        assert trace.get_current_span() is span
    return trace_id, span_id, flags


def test_a_span_continues_the_callers_trace_with_its_own_span_id_flags_and_state():
    trace_id, span_id, flags = traceparent_within({"traceparent": f"{PARENT}-01", "tracestate": "shop=1"})
    assert (trace_id, flags) == (TRACE_ID, "01") and span_id != "b7ad6b7169203331"
    with tracer.start_as_current_span(
        "work", context=extract_context({"traceparent": f"{PARENT}-01", "tracestate": "shop=1"})
    ):
        assert inject_headers()["tracestate"] == "shop=1"
    assert traceparent_within({"traceparent": f"{PARENT}-00"})[2] == "00"  # an unsampled caller stays unsampled


def test_without_a_caller_each_span_starts_a_sampled_trace_of_its_own():
    first, second = traceparent_within({}), traceparent_within({})
    assert first[0] != second[0] and first[1] != second[1] and first[2] == second[2] == "01"
    assert len(first[0]) == 32 and int(first[0], 16) and len(first[1]) == 16 and int(first[1], 16)
