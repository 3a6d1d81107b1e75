"""OpenTelemetry traces that follow a request across event hops.

The trace context travels in each event's ``headers`` (W3C ``traceparent``/``tracestate``),
so a trace starts where a request enters (the HTTP ingress) and goes on in every agent that
handles an event caused by it:

    # producer: the ingress, or an agent emitting a derived event
    with span("ingress request", kind=SpanKind.SERVER):
        event = InferenceRequested(..., headers=inject())
    derived = TokensReserved(..., headers=inject(cause.headers))   # inside the consumer's span

    # consumer: an agent handling an event
    with event_span("quota decide", event):
        ...

Spans cost nothing unless an exporter is configured: ``QUOTAFLOW_OTEL_EXPORTER=none`` (the
default) installs no SDK, and the API's no-op tracer still carries incoming context through.
``console`` prints spans; ``otlp`` needs ``opentelemetry-exporter-otlp-proto-grpc`` (or
``-http``) installed and reads the standard ``OTEL_EXPORTER_OTLP_*`` variables.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Tracer

from events import Event
from quotaflow.observability.config import Exporter, ObservabilitySettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

TRACER_NAME = "quotaflow"
MAX_LINKS = 128

__all__ = [
    "SpanKind",
    "batch_span",
    "configure_tracing",
    "event_attributes",
    "event_span",
    "extract",
    "inject",
    "span",
]


def _tracer(tracer: Tracer | None) -> Tracer:
    return tracer or trace.get_tracer(TRACER_NAME)


def inject(
    headers: Mapping[str, str] | None = None, *, context: Context | None = None
) -> dict[str, str]:
    """A copy of ``headers`` carrying the current (or ``context``'s) trace context.

    With no active span the copy keeps what ``headers`` carried, so a derived event built from
    its cause's headers stays in the cause's trace.
    """
    carrier = dict(headers or {})
    propagate.inject(carrier, context=context)
    return carrier


def extract(headers: Mapping[str, str] | None) -> Context:
    """The trace context an event's headers carry (an empty context when they carry none)."""
    return propagate.extract(dict(headers or {}))


def _has_trace(context: Context) -> bool:
    return trace.get_current_span(context).get_span_context().is_valid


def event_attributes(event: Event) -> dict[str, str]:
    """Span attributes naming an event; never payload, never secrets."""
    attrs = {
        "quotaflow.tenant": event.tenant_id,
        "quotaflow.event_id": str(event.event_id),
        "quotaflow.event_type": str(getattr(event, "type", type(event).__name__)),
    }
    request_id = getattr(event, "request_id", None)
    if request_id is not None:
        attrs["quotaflow.request_id"] = str(request_id)
    return attrs


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str | int | float | bool] | None = None,
    tracer: Tracer | None = None,
) -> Iterator[Span]:
    """A span under the current one (a new trace when there is none)."""
    with _tracer(tracer).start_as_current_span(
        name, kind=kind, attributes=dict(attributes or {})
    ) as current:
        yield current


@contextmanager
def event_span(
    name: str,
    event: Event | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    kind: SpanKind = SpanKind.CONSUMER,
    attributes: Mapping[str, str | int | float | bool] | None = None,
    tracer: Tracer | None = None,
) -> Iterator[Span]:
    """A span continuing the trace carried by ``event.headers`` (or ``headers``).

    When they carry no trace context the span goes under the current span, if any.
    """
    carried = headers if headers is not None else (event.headers if event is not None else None)
    parent = extract(carried)
    attrs: dict[str, Any] = event_attributes(event) if event is not None else {}
    attrs.update(attributes or {})
    with _tracer(tracer).start_as_current_span(
        name, context=parent if _has_trace(parent) else None, kind=kind, attributes=attrs
    ) as current:
        yield current


@contextmanager
def batch_span(
    name: str,
    events: Iterable[Event],
    *,
    kind: SpanKind = SpanKind.CONSUMER,
    tracer: Tracer | None = None,
) -> Iterator[Span]:
    """One span for a batch, linked to the trace of each event in it (at most 128 links)."""
    links: list[Link] = []
    count = 0
    for event in events:
        count += 1
        ctx = trace.get_current_span(extract(event.headers)).get_span_context()
        if ctx.is_valid and len(links) < MAX_LINKS:
            links.append(Link(ctx))
    with _tracer(tracer).start_as_current_span(
        name, kind=kind, links=links, attributes={"quotaflow.batch_size": count}
    ) as current:
        yield current


def _otlp_exporter() -> Any:
    for module in (
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    ):
        try:
            return importlib.import_module(module).OTLPSpanExporter()
        except ImportError:
            continue
    raise RuntimeError(
        "QUOTAFLOW_OTEL_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-grpc "
        "(or opentelemetry-exporter-otlp-proto-http) installed"
    )


def configure_tracing(
    service_name: str | None = None,
    exporter: Exporter | None = None,
    *,
    settings: ObservabilitySettings | None = None,
) -> TracerProvider | None:
    """Install the process's tracer provider from ``QUOTAFLOW_OTEL_*``; None when off.

    Call once at start (e.g. ``configure_tracing("quotaflow-quota")``); spans are flushed at
    exit. Tests pass their own tracer to the helpers instead.
    """
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    config = settings or ObservabilitySettings()
    kind = exporter or config.otel_exporter
    if kind == "none":
        return None
    span_exporter = ConsoleSpanExporter() if kind == "console" else _otlp_exporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name or config.otel_service_name})
    )
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)
    return provider
