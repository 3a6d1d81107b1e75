"""The facts of quotaflow: immutable, versioned events and their codec.

Every event is a frozen pydantic model with a stable string ``type`` and an integer
``version``. Decoding goes through one discriminated union (:mod:`events.codec`);
old versions are upcast on read (:mod:`events.upcasting`), never rewritten.
"""

from events.base import Event, derive_id, new_id, utcnow
from events.codec import DecodeError, decode, encode, event_json_schema
from events.model import (
    AnyEvent,
    ClockTicked,
    InferenceCompleted,
    InferenceFailed,
    InferenceRequested,
    PriceSet,
    QuotaPolicy,
    QuotaPolicySet,
    RequestRejected,
    ReservationExpired,
    ReservationReleased,
    ReservationSettled,
    TenantRegistered,
    TokensReserved,
)

__all__ = [
    "AnyEvent",
    "ClockTicked",
    "DecodeError",
    "Event",
    "InferenceCompleted",
    "InferenceFailed",
    "InferenceRequested",
    "PriceSet",
    "QuotaPolicy",
    "QuotaPolicySet",
    "RequestRejected",
    "ReservationExpired",
    "ReservationReleased",
    "ReservationSettled",
    "TenantRegistered",
    "TokensReserved",
    "decode",
    "derive_id",
    "encode",
    "event_json_schema",
    "new_id",
    "utcnow",
]
