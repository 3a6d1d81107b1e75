"""Every fact of the quotaflow domain, one frozen model each.

Which topic holds what (see :mod:`streams.topics`):

* ``requests`` — what the quota agent decides on, in one total order per tenant partition:
  TenantRegistered, QuotaPolicySet, InferenceRequested, InferenceCompleted, InferenceFailed,
  ClockTicked.
* ``quota`` — the quota agent's decisions: TokensReserved, RequestRejected,
  ReservationSettled, ReservationReleased, ReservationExpired.
* ``catalog`` — global facts: PriceSet.

The stored ``type`` strings are part of the log format: never rename one. A change of
meaning is a new ``version`` with an upcaster in :mod:`events.upcasting`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from events.base import Event

#: The tenant id of facts that belong to no tenant (prices, clock ticks).
SYSTEM_TENANT = "system"

Model = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]
Tokens = Annotated[int, Field(ge=0)]


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class QuotaPolicy(_Value):
    """A tenant's limits. ``None`` means unlimited for that dimension."""

    token_budget: Tokens = Field(description="tokens per period")
    period: Literal["month", "day"] = "month"
    tokens_per_minute: Annotated[int, Field(ge=1)] | None = None
    requests_per_minute: Annotated[int, Field(ge=1)] | None = None
    max_concurrent: Annotated[int, Field(ge=1)] | None = None
    reservation_ttl_s: Annotated[int, Field(ge=1, le=86_400)] = 300


class ChatMessage(_Value):
    role: Literal["system", "user", "assistant"]
    content: Annotated[str, Field(max_length=200_000)]


class RequestSpec(_Value):
    """What the client asked the model to do; carried from request to reservation."""

    model: Model
    prompt: Annotated[str, Field(max_length=200_000)] | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=256)] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=32_768)]
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.0
    priority: Annotated[int, Field(ge=0, le=9)] = 0

    @model_validator(mode="after")
    def _prompt_or_messages(self) -> RequestSpec:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("exactly one of prompt and messages is required")
        return self


# --- tenants and prices ---------------------------------------------------------------


class TenantRegistered(Event):
    type: Literal["TenantRegistered"] = "TenantRegistered"
    version: Literal[1] = 1
    name: Annotated[str, Field(min_length=1, max_length=200)]
    api_key_hash: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    policy: QuotaPolicy


class QuotaPolicySet(Event):
    type: Literal["QuotaPolicySet"] = "QuotaPolicySet"
    version: Literal[1] = 1
    policy: QuotaPolicy


class PriceSet(Event):
    """The price of a model from ``occurred_at`` on (a global fact: tenant ``system``)."""

    type: Literal["PriceSet"] = "PriceSet"
    version: Literal[1] = 1
    model: Model
    prompt_per_1k: Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=9)]
    completion_per_1k: Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=9)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"


class ClockTicked(Event):
    """Event time passing on a partition with no traffic, so reservations can expire."""

    type: Literal["ClockTicked"] = "ClockTicked"
    version: Literal[1] = 1
    partition: Annotated[int, Field(ge=0)]


# --- the life of a request ------------------------------------------------------------


class InferenceRequested(Event):
    type: Literal["InferenceRequested"] = "InferenceRequested"
    version: Literal[1] = 1
    request_id: uuid.UUID
    spec: RequestSpec
    estimated_prompt_tokens: Tokens
    idempotency_key: Annotated[str, Field(max_length=200)] | None = None

    @property
    def estimated_tokens(self) -> int:
        """The reservation this request needs: prompt plus the completion bound."""
        return self.estimated_prompt_tokens + self.spec.max_tokens


class TokensReserved(Event):
    type: Literal["TokensReserved"] = "TokensReserved"
    version: Literal[1] = 1
    request_id: uuid.UUID
    tokens: Tokens
    expires_at: datetime
    spec: RequestSpec


RejectReason = Literal["budget", "tpm", "rpm", "concurrency", "unknown_tenant", "invalid"]


class RequestRejected(Event):
    type: Literal["RequestRejected"] = "RequestRejected"
    version: Literal[1] = 1
    request_id: uuid.UUID
    reason: RejectReason
    detail: str = ""
    requested_tokens: Tokens = 0
    retry_after_s: Annotated[float, Field(ge=0)] | None = None


class InferenceCompleted(Event):
    type: Literal["InferenceCompleted"] = "InferenceCompleted"
    version: Literal[1] = 1
    request_id: uuid.UUID
    model: Model
    model_version: str = "1"
    prompt_tokens: Tokens
    completion_tokens: Tokens
    latency_ms: Annotated[float, Field(ge=0)]
    text: str = ""


class InferenceFailed(Event):
    type: Literal["InferenceFailed"] = "InferenceFailed"
    version: Literal[1] = 1
    request_id: uuid.UUID
    model: Model
    reason: str
    retryable: bool = False


class ReservationSettled(Event):
    """Actual usage charged against a reservation; ``reserved - actual`` goes back."""

    type: Literal["ReservationSettled"] = "ReservationSettled"
    version: Literal[1] = 1
    request_id: uuid.UUID
    model: Model
    reserved: Tokens
    prompt_tokens: Tokens
    completion_tokens: Tokens

    @property
    def actual(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def returned(self) -> int:
        return self.reserved - self.actual


class ReservationReleased(Event):
    type: Literal["ReservationReleased"] = "ReservationReleased"
    version: Literal[1] = 1
    request_id: uuid.UUID
    reserved: Tokens
    reason: str = ""


class ReservationExpired(Event):
    type: Literal["ReservationExpired"] = "ReservationExpired"
    version: Literal[1] = 1
    request_id: uuid.UUID
    reserved: Tokens


AnyEvent = Annotated[
    TenantRegistered
    | QuotaPolicySet
    | PriceSet
    | ClockTicked
    | InferenceRequested
    | TokensReserved
    | RequestRejected
    | InferenceCompleted
    | InferenceFailed
    | ReservationSettled
    | ReservationReleased
    | ReservationExpired,
    Field(discriminator="type"),
]

#: The current version of every stored type name.
CURRENT_VERSIONS: dict[str, int] = {
    cls.model_fields["type"].default: cls.model_fields["version"].default
    for cls in (
        TenantRegistered,
        QuotaPolicySet,
        PriceSet,
        ClockTicked,
        InferenceRequested,
        TokensReserved,
        RequestRejected,
        InferenceCompleted,
        InferenceFailed,
        ReservationSettled,
        ReservationReleased,
        ReservationExpired,
    )
}
