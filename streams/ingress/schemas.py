"""The API's bodies and answers (the OpenAPI document is generated from these)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from events.model import ChatMessage, Model, QuotaPolicy, RequestSpec
from quotaflow.tokens import MODELS

TenantId = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- requests ----------------------------------------------------------------------------


def _request_schema(schema: dict[str, Any]) -> None:
    """Document what the validator enforces: exactly one of prompt / messages, not null, and
    the models that have a tokenizer (an unknown model is a 422 ``unknown_model``)."""
    props = schema["properties"]
    for name in ("prompt", "messages"):
        prop = props[name]
        (branch,) = [b for b in prop.pop("anyOf") if b.get("type") != "null"]
        prop.pop("default", None)
        prop.update(branch)
    props["model"]["enum"] = sorted(MODELS)
    schema["oneOf"] = [{"required": ["prompt"]}, {"required": ["messages"]}]


class InferenceRequestBody(_Body):
    """What to run: a ``prompt`` or chat ``messages`` (exactly one), and the completion bound."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_request_schema)

    model: Model
    prompt: Annotated[str, Field(max_length=200_000)] | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=256)] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=32_768)]
    temperature: Annotated[float, Field(ge=0.0, le=2.0, allow_inf_nan=False)] = 0.0
    priority: Annotated[int, Field(ge=0, le=9)] = 0

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in ("prompt", "messages"):
                if name in data and data[name] is None:
                    raise ValueError(f"{name} must not be null (leave it out instead)")
        return data

    @model_validator(mode="after")
    def _prompt_or_messages(self) -> InferenceRequestBody:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("exactly one of prompt and messages is required")
        return self

    def spec(self) -> RequestSpec:
        return RequestSpec(
            model=self.model,
            prompt=self.prompt,
            messages=self.messages,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            priority=self.priority,
        )

    def prompt_chars(self) -> int:
        if self.prompt is not None:
            return len(self.prompt)
        return sum(len(m.content) for m in self.messages or ())


class RequestAccepted(_Answer):
    """The request is in the log; ``reserved`` once the quota agent reserved its tokens,
    ``pending`` if the decision did not come in time (poll ``GET /v1/requests/{id}``)."""

    request_id: uuid.UUID
    status: Literal["reserved", "pending"]
    reserved_tokens: int | None
    estimated_prompt_tokens: int
    estimated_tokens: int
    replayed: bool = Field(False, description="an earlier attempt with this Idempotency-Key")


class TokenCounts(_Answer):
    prompt: int
    completion: int
    total: int


RequestStatus = Literal[
    "requested", "reserved", "rejected", "completed", "failed", "settled", "released", "expired"
]


class RequestView(_Answer):
    request_id: uuid.UUID
    tenant_id: str
    status: RequestStatus
    model: str | None
    text: str | None = Field(None, description="the completion, once completed")
    estimated_prompt_tokens: int | None
    max_tokens: int | None
    estimated_tokens: int | None
    reserved_tokens: int | None
    actual_tokens: TokenCounts | None = Field(None, description="what the model reported")
    charged_tokens: TokenCounts | None = Field(None, description="what was settled")
    reject_reason: str | None = None
    reject_detail: str | None = None
    retry_after_s: float | None = None
    failure_reason: str | None = None
    requested_at: datetime | None = None
    reserved_at: datetime | None = None
    rejected_at: datetime | None = None
    completed_at: datetime | None = None
    settled_at: datetime | None = None


# --- tenants -----------------------------------------------------------------------------


class QuotaOut(_Answer):
    tenant_id: str
    as_of: datetime
    period: Literal["month", "day"]
    period_start: datetime
    period_end: datetime
    budget: int
    used: int
    reserved: int
    remaining: int
    tokens_per_minute: int | None
    requests_per_minute: int | None
    max_concurrent: int | None
    window_tokens: int
    window_requests: int
    open_reservations: int
    open_tokens: int
    rejected: int


# --- admin -------------------------------------------------------------------------------


class TenantCreate(_Body):
    model_config = ConfigDict(extra="forbid", strict=False)

    tenant_id: TenantId
    name: Annotated[str, Field(min_length=1, max_length=200)]
    policy: QuotaPolicy


class TenantOut(_Answer):
    tenant_id: str
    name: str
    policy: QuotaPolicy
    registered_at: datetime
    updated_at: datetime


class TenantCreated(_Answer):
    tenant_id: str
    name: str
    policy: QuotaPolicy
    api_key: str = Field(description="shown once: only its sha256 is stored")
    active: bool = Field(description="the tenant directory knows the key already")


class TenantList(_Answer):
    tenants: list[TenantOut]


class PolicyAccepted(_Answer):
    tenant_id: str
    policy: QuotaPolicy
    event_id: uuid.UUID


Price = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=9, allow_inf_nan=False)]


class PriceBody(_Body):
    model_config = ConfigDict(extra="forbid", strict=False)

    prompt_per_1k: Price
    completion_per_1k: Price
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"


class PriceAccepted(_Answer):
    model: str
    prompt_per_1k: Decimal
    completion_per_1k: Decimal
    currency: str
    event_id: uuid.UUID


# --- operations --------------------------------------------------------------------------


class Health(_Answer):
    status: Literal["ok", "ready"]
    checks: dict[str, str] = Field(default_factory=dict)
