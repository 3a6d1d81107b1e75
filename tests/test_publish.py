from __future__ import annotations

import uuid

from events import InferenceRequested
from quotaflow.publish import parse, parse_line
from quotaflow.tokens import estimate


def test_a_line_becomes_the_event_the_ingress_would_append() -> None:
    event = parse_line('{"tenant": "acme", "model": "echo", "prompt": "hello", "max_tokens": 16}')
    assert isinstance(event, InferenceRequested)
    assert event.tenant_id == "acme"
    assert event.spec.max_tokens == 16
    assert event.estimated_prompt_tokens == estimate("echo", "hello", None, 16).prompt_tokens


def test_an_idempotency_key_gives_a_stable_request_id() -> None:
    line = (
        '{"tenant": "acme", "model": "echo", "prompt": "x", "max_tokens": 1,'
        ' "idempotency_key": "k1"}'
    )
    assert parse_line(line).request_id == parse_line(line).request_id
    assert isinstance(parse_line(line).request_id, uuid.UUID)


def test_bad_lines_are_reported_with_their_number_and_reason() -> None:
    lines = [
        '{"tenant": "acme", "model": "echo", "prompt": "ok", "max_tokens": 2}',
        "not json",
        "",
        '{"tenant": "acme", "model": "echo", "prompt": "x", "max_tokens": 0}',
        '{"tenant": "acme", "model": "gpt-99", "prompt": "x", "max_tokens": 2}',
        '{"tenant": "acme", "model": "echo", "max_tokens": 2}',
        '{"tenant": "a b", "model": "echo", "prompt": "x", "max_tokens": 2}',
    ]
    results = dict(parse(lines))
    assert isinstance(results[1], InferenceRequested)
    assert 3 not in results  # empty lines are skipped
    errors = {n: r for n, r in results.items() if isinstance(r, str)}
    assert set(errors) == {2, 4, 5, 6, 7}
    assert "not JSON" in errors[2]
    assert "max_tokens" in errors[4]
    assert "unknown model 'gpt-99'" in errors[5]
    assert "exactly one of prompt and messages" in errors[6]
    assert "tenant" in errors[7]
