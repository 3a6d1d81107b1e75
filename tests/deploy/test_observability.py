"""quotaflow.observability: token counters, the metrics/health server, Triton timing, logs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY, CollectorRegistry, Counter

from events import (
    Event,
    InferenceRequested,
    RequestRejected,
    ReservationExpired,
    ReservationReleased,
    ReservationSettled,
    TokensReserved,
)
from events.model import RequestSpec
from quotaflow.observability import tokens
from quotaflow.observability.logconfig import (
    REDACTED,
    Redactor,
    configure_logging,
    get_logger,
    log_context,
)
from quotaflow.observability.server import start_metrics_server, watched
from quotaflow.observability.tokens import TenantLabels, TokenDelta, token_deltas
from quotaflow.observability.triton_calls import time_triton_call
from streams.quota import replay
from tests.quota.builder import Builder, build, ops, policies

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
SPEC = RequestSpec(model="echo", prompt="hi", max_tokens=90)
REQ = uuid.UUID(int=7)


def sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


# --- tokens -----------------------------------------------------------------------------------


def test_token_deltas_of_each_decision() -> None:
    reserved = TokensReserved(
        tenant_id="acme", request_id=REQ, tokens=100, expires_at=T0, spec=SPEC, occurred_at=T0
    )
    settled = ReservationSettled(
        tenant_id="acme",
        request_id=REQ,
        model="echo",
        reserved=100,
        prompt_tokens=10,
        completion_tokens=60,
    )
    released = ReservationReleased(tenant_id="acme", request_id=REQ, reserved=100)
    expired = ReservationExpired(tenant_id="acme", request_id=REQ, reserved=100)
    assert token_deltas(reserved) == [TokenDelta("acme", "reserved", 100)]
    assert token_deltas(settled) == [
        TokenDelta("acme", "settled", 70),
        TokenDelta("acme", "released", 30, "unused"),
    ]
    assert token_deltas(released) == [TokenDelta("acme", "released", 100, "released")]
    assert token_deltas(expired) == [TokenDelta("acme", "released", 100, "expired")]
    request = InferenceRequested(
        tenant_id="acme", request_id=REQ, spec=SPEC, estimated_prompt_tokens=10
    )
    assert token_deltas(request) == []


def _totals(decisions: list[Event]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for event in decisions:
        for d in token_deltas(event):
            out[d.tenant][d.kind] += d.tokens
    return out


@settings(max_examples=60, deadline=None)
@given(initial=st.lists(policies, min_size=3, max_size=3), steps=st.lists(ops, max_size=60))
def test_every_reserved_token_ends_settled_or_released(
    initial: list[Any], steps: list[Any]
) -> None:
    """Over the quota agent's real decisions: once every reservation is closed (here by
    letting them all expire), reserved = settled + released, per tenant."""
    events = build(initial, steps)
    closing = Builder(now=max(e.occurred_at for e in events) + timedelta(days=2))
    closing.tick()
    _, decisions = replay([*events, *closing.events])
    for tenant, kinds in _totals(decisions).items():
        assert kinds["reserved"] == kinds["settled"] + kinds["released"], tenant


def test_observe_decisions_counts_tokens_requests_and_latency() -> None:
    tenant = f"obs-{uuid.uuid4().hex[:8]}"
    reserved = TokensReserved(
        tenant_id=tenant, request_id=REQ, tokens=100, expires_at=T0, spec=SPEC, occurred_at=T0
    )
    rejected = RequestRejected(tenant_id=tenant, request_id=REQ, reason="tpm", occurred_at=T0)
    settled = ReservationSettled(
        tenant_id=tenant,
        request_id=REQ,
        model="echo",
        reserved=100,
        prompt_tokens=10,
        completion_tokens=50,
    )
    latency = "quotaflow_decision_latency_seconds_sum"
    before = sample(latency)
    tokens.observe_decisions([reserved, rejected, settled], now=T0 + timedelta(seconds=0.25))
    assert sample("quotaflow_tokens_reserved_total", tenant=tenant) == 100
    assert sample("quotaflow_tokens_settled_total", tenant=tenant) == 60
    assert sample("quotaflow_tokens_released_total", tenant=tenant, reason="unused") == 40
    decided = "quotaflow_requests_decided_total"
    assert sample(decided, tenant=tenant, decision="reserved", reason="") == 1
    assert sample(decided, tenant=tenant, decision="rejected", reason="tpm") == 1
    assert sample(latency) - before == pytest.approx(0.5)


def test_tenant_labels_are_bounded() -> None:
    labels = TenantLabels(limit=2)
    seen = [labels(t) for t in ("a", "b", "c", "a", "d", "b")]
    assert seen == ["a", "b", "_other", "a", "_other", "b"]


# --- the metrics and health server ------------------------------------------------------------


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


async def test_metrics_server_serves_metrics_and_follows_the_loop() -> None:
    registry = CollectorRegistry()
    Counter("probe_hits", "test counter", registry=registry).inc(3)
    server = start_metrics_server(0, "127.0.0.1", registry=registry)
    assert server is None  # port 0: off
    server = start_metrics_server(_free_port(), "127.0.0.1", registry=registry, stale_after_s=0.5)
    assert server is not None
    try:
        port = server.port
        status, body = await asyncio.to_thread(get, port, "/metrics")
        assert status == 200
        assert "probe_hits_total 3.0" in body
        assert (await asyncio.to_thread(get, port, "/healthz"))[0] == 200
        assert (await asyncio.to_thread(get, port, "/readyz"))[0] == 503  # no loop yet
        assert (await asyncio.to_thread(get, port, "/other"))[0] == 404

        async def main() -> None:
            await asyncio.sleep(0.2)
            assert (await asyncio.to_thread(get, port, "/readyz"))[0] == 200
            assert (await asyncio.to_thread(get, port, "/healthz"))[0] == 200

        await watched(server, main(), interval_s=0.05)
        # a loop that stops ticking: unhealthy once the heartbeat is stale
        server.health.beat()
        await asyncio.sleep(0.6)
        assert (await asyncio.to_thread(get, port, "/healthz"))[0] == 503
    finally:
        server.close()
        server.close()


def test_a_taken_port_is_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    first = start_metrics_server(_free_port(), "127.0.0.1", registry=CollectorRegistry())
    assert first is not None
    try:
        with caplog.at_level(logging.WARNING):
            assert start_metrics_server(first.port, "127.0.0.1") is None
        assert "metrics server not started" in caplog.text
    finally:
        first.close()


def _free_port() -> int:
    from quotaflow.triton.server import free_port

    return free_port()


# --- Triton call timing -----------------------------------------------------------------------


def test_triton_calls_are_timed_per_model_and_outcome() -> None:
    model = f"m-{uuid.uuid4().hex[:6]}"
    with time_triton_call(model):
        pass
    with time_triton_call(model) as call:
        call.outcome = "timeout"
    with pytest.raises(RuntimeError), time_triton_call(model):
        raise RuntimeError("boom")

    async def cancelled() -> None:
        with time_triton_call(model):
            await asyncio.sleep(10)

    async def cancel_one() -> None:
        task = asyncio.create_task(cancelled())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_one())
    counts = {
        outcome: sample("quotaflow_triton_request_seconds_count", model=model, outcome=outcome)
        for outcome in ("ok", "timeout", "error", "cancelled")
    }
    assert counts == {"ok": 1, "timeout": 1, "error": 1, "cancelled": 1}
    assert sample("quotaflow_triton_in_flight", model=model) == 0


# --- structured logs --------------------------------------------------------------------------


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging("DEBUG", "json", secrets=["s3cret-admin-key"], stream=stream)
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_logs_are_json_with_event_ids_and_no_secrets(log_stream: io.StringIO) -> None:
    event = InferenceRequested(
        tenant_id="acme", request_id=REQ, spec=SPEC, estimated_prompt_tokens=10
    )
    log = get_logger("quotaflow.test")
    with log_context(event):
        log.info("reserved", tokens=100, admin_key="s3cret-admin-key")
        logging.getLogger("streams.runtime.test").warning(
            "connecting to %s", "rabbitmq-stream://guest:hunter22@rabbit:5552/%2f"
        )
    log.info("outside", note="the key is s3cret-admin-key", dsn="postgresql://u:p@h/db")
    first, second, third = lines(log_stream)
    assert first["event"] == "reserved"
    assert first["level"] == "info"
    assert first["tokens"] == 100
    assert first["tenant"] == "acme"
    assert first["request_id"] == str(REQ)
    assert first["event_id"] == str(event.event_id)
    assert first["event_type"] == "InferenceRequested"
    assert first["admin_key"] == REDACTED
    assert "ts" in first
    # the standard library's loggers go through the same chain
    assert second["logger"] == "streams.runtime.test"
    assert second["tenant"] == "acme"
    assert "hunter22" not in second["event"]
    assert "guest:[redacted]@rabbit" in second["event"]
    assert "tenant" not in third
    assert third["note"] == f"the key is {REDACTED}"
    assert third["dsn"] == REDACTED
    assert "s3cret-admin-key" not in log_stream.getvalue()


def test_tracebacks_are_redacted_too(log_stream: io.StringIO) -> None:
    try:
        raise ConnectionError("could not reach postgresql://app:pa55word@db:5432/q")
    except ConnectionError:
        logging.getLogger("x").exception("failed")
    (line,) = lines(log_stream)
    assert "ConnectionError" in line["exception"]
    assert "pa55word" not in line["exception"]


def test_the_redactor_keeps_business_fields() -> None:
    redact = Redactor(["admin-key-value"])
    out = redact(
        None,
        "info",
        {
            "tokens": 5,
            "api_key_hash": "abc",
            "password": "x",
            "nested": {"secret": "y", "ok": "admin-key-value here"},
            "dsn": "host=db password=hunter2 user=app",
        },
    )
    assert out["tokens"] == 5
    assert out["api_key_hash"] == REDACTED
    assert out["password"] == REDACTED
    assert out["nested"] == {"secret": REDACTED, "ok": f"{REDACTED} here"}
    assert out["dsn"] == REDACTED
    assert (
        redact.scrub("host=db password=hunter2 user=app") == f"host=db password={REDACTED} user=app"
    )
