"""``quotaflow publish``: request events from a JSON Lines file (or stdin) into the log.

Each line is the body of ``POST /v1/requests`` plus ``tenant``::

    {"tenant": "acme", "model": "echo", "prompt": "hello", "max_tokens": 16}

Lines are validated and their tokens estimated exactly as the HTTP ingress does; a bad line is
reported with its number and reason and skipped, never half-published.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from events import InferenceRequested
from events.model import RequestSpec
from quotaflow.tokens import estimate


class RequestLine(RequestSpec):
    """One line: a request body and the tenant it is for."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    idempotency_key: str | None = Field(None, max_length=200)


class _Wrapper(BaseModel):
    line: RequestLine


@dataclass
class Parsed:
    events: list[InferenceRequested] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)


def parse_line(text: str) -> InferenceRequested:
    """A line → the InferenceRequested the ingress would append (ValueError if invalid)."""
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    try:
        line = RequestLine.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "line"
        raise ValueError(f"{where}: {first['msg']}") from None
    est = estimate(
        line.model,
        line.prompt,
        [m.model_dump() for m in line.messages] if line.messages else None,
        line.max_tokens,
    )
    request_id = (
        uuid.uuid5(uuid.NAMESPACE_URL, f"quotaflow:{line.tenant}:{line.idempotency_key}")
        if line.idempotency_key
        else uuid.uuid4()
    )
    spec = RequestSpec.model_validate(line.model_dump(exclude={"tenant", "idempotency_key"}))
    return InferenceRequested(
        tenant_id=line.tenant,
        request_id=request_id,
        spec=spec,
        estimated_prompt_tokens=est.prompt_tokens,
        idempotency_key=line.idempotency_key,
    )


def parse(lines: Iterable[str]) -> Iterator[tuple[int, InferenceRequested | str]]:
    """``(line number, event or error message)`` for every non-empty line."""
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            yield number, parse_line(text)
        except ValueError as exc:
            yield number, str(exc)
