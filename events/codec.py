"""Bytes <-> events. Pure: no sockets, no clocks.

The wire format is compact JSON (pydantic-core's serializer): self-describing, readable with
any tool, and within a few percent of msgpack for these small records once pydantic
validation dominates (``just bench-log`` measures the codec).

Decoding tries the fast path (one ``validate_json`` over the discriminated union); only on
failure does it look at ``type``/``version`` to upcast an old version or explain the error.
Anything that is not a current event raises :class:`DecodeError`: the caller decides what
to do (an agent dead-letters it).
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from events.base import Event
from events.model import CURRENT_VERSIONS, AnyEvent
from events.upcasting import UPCASTERS, UpcasterChain

_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)


class DecodeError(ValueError):
    """The bytes are not a known event: garbage, an unknown type, a future version."""

    def __init__(self, reason: str, data: bytes) -> None:
        super().__init__(reason)
        self.reason = reason
        self.data = data


def encode(event: Event) -> bytes:
    return event.__pydantic_serializer__.to_json(event)


def decode(data: bytes, upcasters: UpcasterChain = UPCASTERS) -> AnyEvent:
    try:
        return _ADAPTER.validate_json(data)
    except ValidationError as fast_error:
        return _decode_slow(data, fast_error, upcasters)


def _decode_slow(data: bytes, fast_error: ValidationError, upcasters: UpcasterChain) -> AnyEvent:
    try:
        raw: Any = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}", data) from None
    if not isinstance(raw, dict):
        raise DecodeError("not a JSON object", data)
    event_type, version = raw.get("type"), raw.get("version")
    if not isinstance(event_type, str) or event_type not in CURRENT_VERSIONS:
        raise DecodeError(f"unknown event type {event_type!r}", data)
    current = CURRENT_VERSIONS[event_type]
    if not isinstance(version, int) or isinstance(version, bool):
        raise DecodeError(f"{event_type}: version must be an integer, got {version!r}", data)
    if version > current:
        raise DecodeError(f"{event_type} v{version} is newer than this reader (v{current})", data)
    if version == current:
        raise DecodeError(f"invalid {event_type}: {_summary(fast_error)}", data)
    try:
        upcast = upcasters.upcast(raw, current)
        return _ADAPTER.validate_python(upcast)
    except LookupError as exc:
        raise DecodeError(str(exc), data) from None
    except ValidationError as exc:
        raise DecodeError(f"invalid {event_type} after upcasting: {_summary(exc)}", data) from None


def _summary(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:3]:
        loc = ".".join(str(p) for p in item["loc"][1:] or item["loc"])
        parts.append(f"{loc}: {item['msg']}")
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def event_json_schema() -> dict[str, Any]:
    """JSON Schema of every current event (the discriminated union)."""
    return _ADAPTER.json_schema(mode="serialization")
