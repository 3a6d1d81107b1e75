"""Hypothesis strategies for records that are not events: what a buggy or hostile producer
could append to any stream, bypassing the codec.

Every payload drawn here fails :func:`events.decode` (checked by the filter: a payload that
decodes is not garbage and is dropped). The kinds: random bytes, empty, huge (up to the
broker's frame size), JSON that is not an object, a real event with an unknown ``type``, a
future (or nonsensical) ``version``, a required field missing, a field of the wrong type, an
unknown extra field, a field out of range (an oversized prompt), truncated JSON, a flipped
byte, invalid UTF-8 in a string, deep nesting.

:data:`CORPUS` holds hand-picked payloads that target the hand-written fast decoders (the
API's decision waiter reads ``TokensReserved`` with orjson, not pydantic), published once
besides what hypothesis draws, with :data:`HUGE`.
"""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
from hypothesis import strategies as st

from events import decode, encode
from events.model import CURRENT_VERSIONS
from streams.topics import Topology
from tests.audit.workload import simulate

#: Below RabbitMQ's default frame size (1 MiB) minus the frame and message headers.
MAX_RECORD = 1_000_000


def _samples() -> list[dict[str, Any]]:
    """One valid event of each type a simulated log holds, as JSON dicts."""
    world = simulate(Topology(partitions=2), random.Random(7), tenants=3, requests=60)
    by_type: dict[str, dict[str, Any]] = {}
    for events in world.streams.values():
        for event in events:
            raw = orjson.loads(encode(event))
            by_type.setdefault(raw["type"], raw)
    return [by_type[t] for t in sorted(by_type)]


SAMPLES = _samples()


def undecodable(data: bytes) -> bool:
    try:
        decode(data)
    except Exception:  # the tests check separately that it is a DecodeError
        return True
    return False


json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
samples = st.sampled_from(SAMPLES)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()  # big ints too


@st.composite
def _unknown_type(draw: st.DrawFn) -> bytes:
    event = dict(draw(samples))
    event["type"] = draw(
        st.text(max_size=30).filter(lambda t: t not in CURRENT_VERSIONS)
        | json_values.filter(lambda v: not isinstance(v, str))
    )
    return _dumps(event)


@st.composite
def _bad_version(draw: st.DrawFn) -> bytes:
    event = dict(draw(samples))
    event["version"] = draw(
        st.just(99)
        | st.integers(min_value=2, max_value=2**62)
        | st.integers(max_value=0, min_value=-(2**62))
        | st.sampled_from(["1", "2", 1.0, 2.5, True, None, [1], {"v": 1}])
    )
    return _dumps(event)


@st.composite
def _missing_field(draw: st.DrawFn) -> bytes:
    event = dict(draw(samples))
    required = [k for k in event if k not in ("headers", "causation_id", "correlation_id")]
    del event[draw(st.sampled_from(sorted(required)))]
    return _dumps(event)


@st.composite
def _wrong_type(draw: st.DrawFn) -> bytes:
    event = dict(draw(samples))
    field = draw(st.sampled_from(sorted(event)))
    original = event[field]
    event[field] = draw(json_values.filter(lambda v: type(v) is not type(original)))
    return _dumps(event)


@st.composite
def _extra_field(draw: st.DrawFn) -> bytes:
    event = dict(draw(samples))
    name = draw(st.text(min_size=1, max_size=12).filter(lambda n: n not in event))
    event[name] = draw(json_values)
    return _dumps(event)


@st.composite
def _oversized_prompt(draw: st.DrawFn) -> bytes:
    event = dict(next(s for s in SAMPLES if s["type"] == "InferenceRequested"))
    size = draw(st.integers(min_value=200_001, max_value=MAX_RECORD - 2_000))
    event["spec"] = {**event["spec"], "prompt": "p" * size}
    return _dumps(event)


@st.composite
def _huge(draw: st.DrawFn) -> bytes:
    size = draw(st.integers(min_value=64 * 1024, max_value=MAX_RECORD))
    unit = draw(st.binary(min_size=1, max_size=8))
    return (unit * (size // len(unit) + 1))[:size]


@st.composite
def _truncated(draw: st.DrawFn) -> bytes:
    data = _dumps(draw(samples))
    return data[: draw(st.integers(min_value=0, max_value=len(data) - 1))]


@st.composite
def _flipped(draw: st.DrawFn) -> bytes:
    data = bytearray(_dumps(draw(samples)))
    at = draw(st.integers(min_value=0, max_value=len(data) - 1))
    data[at] ^= draw(st.integers(min_value=1, max_value=255))
    return bytes(data)


@st.composite
def _bad_utf8(draw: st.DrawFn) -> bytes:
    data = _dumps(draw(samples))
    at = data.index(b'"tenant_id":"') + len(b'"tenant_id":"')
    return data[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"])) + data[at:]


@st.composite
def _nested(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(min_value=100, max_value=50_000))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    return opener * depth + b"1" + closer * depth


garbage: st.SearchStrategy[bytes] = st.one_of(
    st.binary(min_size=1, max_size=300),
    st.just(b""),
    _huge(),
    json_values.filter(lambda v: not isinstance(v, dict)).map(_dumps),
    st.dictionaries(st.text(max_size=8), json_values, max_size=4).map(_dumps),
    _unknown_type(),
    _bad_version(),
    _missing_field(),
    _wrong_type(),
    _extra_field(),
    _oversized_prompt(),
    _truncated(),
    _flipped(),
    _bad_utf8(),
    _nested(),
).filter(undecodable)


class Poison:
    """A payload whose repr stays short (hypothesis prints the failing example)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        more = "…" if len(self.data) > 48 else ""
        return f"Poison({len(self.data)} bytes: {self.data[:48]!r}{more})"


poison: st.SearchStrategy[Poison] = garbage.map(Poison)


def _reserved(**changes: Any) -> bytes:
    event = dict(next(s for s in SAMPLES if s["type"] == "TokensReserved"))
    event.update(changes)
    return _dumps(event)


#: Near-decisions that a reader taking shortcuts might trust.
CORPUS: list[bytes] = [
    _reserved(request_id={"not": "a uuid"}),
    _reserved(request_id=["a", "list"]),
    _reserved(tenant_id={"nested": True}),
    _reserved(tokens="many"),
    _reserved(tokens=-5),
    b'{"type":"TokensReserved","version":1,"request_id":"r","tenant_id":"t","tokens":1e999}',
    b'{"type":"RequestRejected","version":1,"request_id":[],"tenant_id":"t","reason":"budget"}',
    b'{"type":"TokensReserved","version":1}',
    b"null",
    b"",
    b"\x00" * 64,
    b"[" * 100_000,
]
#: Appendable, but its dead letter would not fit in a record: the letter keeps a prefix.
HUGE = b"x" * MAX_RECORD
assert all(undecodable(p) for p in [*CORPUS, HUGE])
