"""A trace follows a request across event hops: the context rides in event ``headers``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Tracer

from events import InferenceRequested, TokensReserved, decode, derive_id, encode
from events.model import RequestSpec
from quotaflow.observability.tracing import (
    batch_span,
    configure_tracing,
    event_span,
    extract,
    inject,
    span,
)

SPEC = RequestSpec(model="echo", prompt="hi", max_tokens=8)


@pytest.fixture
def spans() -> Iterator[tuple[Tracer, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test"), exporter
    provider.shutdown()


def request(headers: dict[str, str] | None = None) -> InferenceRequested:
    return InferenceRequested(
        tenant_id="acme",
        request_id=uuid.uuid4(),
        spec=SPEC,
        estimated_prompt_tokens=2,
        headers=headers or {},
    )


def test_a_trace_links_spans_across_an_event_hop(
    spans: tuple[Tracer, InMemorySpanExporter],
) -> None:
    tracer, exporter = spans
    # the ingress: a request comes in, the event carries the trace context
    with span("POST /v1/inference", kind=SpanKind.SERVER, tracer=tracer) as ingress:
        sent = request(inject({"x-origin": "test"}))
    assert sent.headers["x-origin"] == "test"
    assert "traceparent" in sent.headers

    # the log: bytes on a stream, decoded by the agent on the other side
    received = decode(encode(sent))
    assert isinstance(received, InferenceRequested)
    assert received.headers == sent.headers

    # the quota agent: a consumer span continuing that trace, emitting a derived event
    with event_span("quota decide", received, tracer=tracer) as decide:
        reserved = TokensReserved(
            event_id=derive_id(received.event_id, "reserved"),
            tenant_id=received.tenant_id,
            request_id=received.request_id,
            tokens=10,
            expires_at=received.occurred_at,
            spec=SPEC,
            headers=inject(received.headers),
        )
    # the inference agent, one hop further
    with event_span("inference", decode(encode(reserved)), tracer=tracer) as infer:
        pass

    finished = {s.name: s for s in exporter.get_finished_spans()}
    assert set(finished) == {"POST /v1/inference", "quota decide", "inference"}
    trace_id = ingress.get_span_context().trace_id
    assert {s.context.trace_id for s in finished.values() if s.context} == {trace_id}
    assert finished["quota decide"].parent is not None
    assert finished["quota decide"].parent.span_id == ingress.get_span_context().span_id
    assert finished["inference"].parent is not None
    assert finished["inference"].parent.span_id == decide.get_span_context().span_id
    assert finished["quota decide"].kind is SpanKind.CONSUMER
    attributes = finished["quota decide"].attributes or {}
    assert attributes["quotaflow.tenant"] == "acme"
    assert attributes["quotaflow.request_id"] == str(sent.request_id)
    assert attributes["quotaflow.event_type"] == "InferenceRequested"
    assert infer.get_span_context().trace_id == trace_id


def test_an_event_without_trace_context_starts_a_new_trace(
    spans: tuple[Tracer, InMemorySpanExporter],
) -> None:
    tracer, exporter = spans
    plain = request()
    assert inject(plain.headers) == {}  # no active span: nothing to carry
    assert extract(plain.headers) == {}
    with event_span("quota decide", plain, tracer=tracer):
        pass
    (only,) = exporter.get_finished_spans()
    assert only.parent is None


def test_a_batch_span_links_every_traced_event(
    spans: tuple[Tracer, InMemorySpanExporter],
) -> None:
    tracer, exporter = spans
    traced = []
    for i in range(3):
        with span(f"request {i}", tracer=tracer):
            traced.append(request(inject()))
    with batch_span("quota-view apply", [*traced, request()], tracer=tracer):
        pass
    finished = {s.name: s for s in exporter.get_finished_spans()}
    batch = finished["quota-view apply"]
    linked = {link.context.trace_id for link in batch.links}
    assert linked == {
        ctx.trace_id for i in range(3) if (ctx := finished[f"request {i}"].context) is not None
    }
    assert (batch.attributes or {})["quotaflow.batch_size"] == 4


def test_tracing_is_off_unless_an_exporter_is_chosen() -> None:
    assert configure_tracing("quotaflow-test", "none") is None


def test_the_console_exporter_installs_a_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry import trace

    installed: list[object] = []
    monkeypatch.setattr(trace, "set_tracer_provider", installed.append)
    provider = configure_tracing("quotaflow-test", "console")
    assert provider is not None
    try:
        assert installed == [provider]
        assert provider.resource.attributes["service.name"] == "quotaflow-test"
    finally:
        provider.shutdown()


def test_otlp_without_its_exporter_package_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib

    try:
        importlib.import_module("opentelemetry.exporter.otlp")
        pytest.skip("an OTLP exporter is installed here")
    except ImportError:
        pass
    from opentelemetry import trace

    monkeypatch.setattr(trace, "set_tracer_provider", lambda _: None)
    with pytest.raises(RuntimeError, match="opentelemetry-exporter-otlp-proto-grpc"):
        configure_tracing("quotaflow-test", "otlp")
