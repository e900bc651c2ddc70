"""RemoteTrace.inject gives exactly inject_headers(headers, extract_context(received)), fast path or not."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fincart_core.telemetry import IdsOnlyTracerProvider, extract_context, inject_headers
from fincart_processor.remote_trace import RemoteTrace, links_recorded
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import propagate, trace
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
RECEIVED = [
    None,
    {},
    {"Nats-Msg-Id": "w1"},
    {"traceparent": f"00-{TRACE}-{SPAN}-01"},
    {"traceparent": f"00-{TRACE}-{SPAN}-00", "Nats-Msg-Id": "w1"},
    {"traceparent": f"00-{TRACE}-{SPAN}-ff"},
    {"traceparent": f"00-{TRACE.upper()}-{SPAN}-01"},
    {"traceparent": f"00-{'0' * 32}-{SPAN}-01"},
    {"traceparent": f"00-{TRACE}-{'0' * 16}-01"},
    {"traceparent": f"ff-{TRACE}-{SPAN}-01"},
    {"traceparent": f"01-{TRACE}-{SPAN}-01-extra"},
    {"traceparent": f"00-{TRACE}-{SPAN}-01-extra"},
    {"traceparent": f" 00-{TRACE}-{SPAN}-01\t"},
    {"traceparent": "garbage"},
    {"traceparent": f"00-{TRACE}-{SPAN}-01", "tracestate": "shop=1"},
    {"traceparent": f"00-{TRACE}-{SPAN}-01", "baggage": "k=v"},
]


def expected(received: dict[str, str] | None) -> dict[str, str]:
    return inject_headers({"Nats-Msg-Id": "o:1"}, extract_context(received))


@pytest.fixture
def only_tracecontext() -> Iterator[None]:
    default = propagate.get_global_textmap()
    propagate.set_global_textmap(CompositePropagator([TraceContextTextMapPropagator()]))
    yield
    propagate.set_global_textmap(default)


@pytest.mark.parametrize("received", RECEIVED)
def test_inject_equals_extract_then_inject(received: dict[str, str] | None) -> None:
    assert RemoteTrace(received).inject({"Nats-Msg-Id": "o:1"}) == expected(received)


@pytest.mark.parametrize("received", RECEIVED)
def test_other_propagators_are_used_as_configured(received: dict[str, str] | None, only_tracecontext: None) -> None:
    received = {**(received or {}), "baggage": "k=v"} if received and "traceparent" in received else received
    assert RemoteTrace(received).inject({"Nats-Msg-Id": "o:1"}) == expected(received)


@given(st.from_regex(r"\A[0-9a-fA-F]{2}-[0-9a-f]{31,33}-[0-9a-f]{15,17}-[0-9a-fA-F]{2}(-.{0,3})?\Z"))
def test_any_traceparent(parent: str) -> None:
    received = {"traceparent": parent}
    assert RemoteTrace(received).inject({"Nats-Msg-Id": "o:1"}) == expected(received)


def test_context_is_the_extracted_one() -> None:
    received = {"traceparent": f"00-{TRACE}-{SPAN}-01"}
    span = trace.get_current_span(RemoteTrace(received).context).get_span_context()
    assert span == trace.get_current_span(extract_context(received)).get_span_context()


def test_links_only_for_recorded_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "get_tracer_provider", IdsOnlyTracerProvider)
    assert not links_recorded()
    monkeypatch.setattr(trace, "get_tracer_provider", TracerProvider)
    assert links_recorded()
