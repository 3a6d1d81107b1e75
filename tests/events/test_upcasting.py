"""The upcasting mechanism, exercised with a registry of test-only steps."""

from __future__ import annotations

import orjson
import pytest

from events import DecodeError, decode, encode
from events.model import QuotaPolicy, QuotaPolicySet
from events.upcasting import RawEvent, UpcasterChain


def test_steps_apply_in_order_up_to_the_target() -> None:
    chain = UpcasterChain()

    @chain.register("Thing", 1)
    def v1_to_v2(raw: RawEvent) -> RawEvent:
        return {**raw, "version": 2, "b": raw["a"] * 2}

    @chain.register("Thing", 2)
    def v2_to_v3(raw: RawEvent) -> RawEvent:
        return {**raw, "version": 3, "c": raw["b"] + 1}

    assert chain.upcast({"type": "Thing", "version": 1, "a": 5}, 3) == {
        "type": "Thing",
        "version": 3,
        "a": 5,
        "b": 10,
        "c": 11,
    }
    with pytest.raises(LookupError, match="no upcaster"):
        chain.upcast({"type": "Other", "version": 1}, 2)
    with pytest.raises(ValueError, match="exists already"):
        chain.register("Thing", 1)(v1_to_v2)


def test_the_codec_upcasts_an_old_version_on_read() -> None:
    """Pretend QuotaPolicySet v0 stored a flat ``monthly_tokens``: v0 → v1 lifts it."""
    chain = UpcasterChain()

    @chain.register("QuotaPolicySet", 0)
    def v0_to_v1(raw: RawEvent) -> RawEvent:
        raw = dict(raw)
        raw["policy"] = {"token_budget": raw.pop("monthly_tokens"), "period": "month"}
        raw["version"] = 1
        return raw

    current = QuotaPolicySet(tenant_id="acme", policy=QuotaPolicy(token_budget=500))
    old = orjson.loads(encode(current))
    old.pop("policy")
    old.update(version=0, monthly_tokens=500)
    stored = orjson.dumps(old)

    assert decode(stored, chain) == current
    with pytest.raises(DecodeError, match="no upcaster for QuotaPolicySet v0"):
        decode(stored)


def test_an_upcaster_that_skips_a_version_is_refused() -> None:
    chain = UpcasterChain()
    chain.register("Thing", 1)(lambda raw: {**raw, "version": 3})
    with pytest.raises(LookupError, match="did not produce v2"):
        chain.upcast({"type": "Thing", "version": 1}, 3)
