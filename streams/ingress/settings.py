"""The ingress's settings: quotaflow's settings plus the HTTP API's own knobs.

Read from the same ``QUOTAFLOW_*`` environment variables (e.g.
``QUOTAFLOW_DECISION_TIMEOUT_S=0.5``).
"""

from __future__ import annotations

from pydantic import Field

from quotaflow.settings import Settings


class IngressSettings(Settings):
    decision_timeout_s: float = Field(
        2.0, ge=0.0, le=60.0, description="how long POST /v1/requests waits for the decision"
    )
    directory_timeout_s: float = Field(
        5.0, ge=0.0, le=60.0, description="how long tenant creation waits for the directory"
    )
    idempotency_ttl_s: int = Field(
        86_400, ge=60, description="how long an Idempotency-Key is remembered"
    )
    auth_cache_s: float = Field(
        2.0, ge=0.0, le=60.0, description="how long a resolved API key is cached in process"
    )
    max_body_bytes: int = Field(1024 * 1024, ge=1024, description="largest request body")
    max_prompt_chars: int = Field(
        65_536, ge=1, le=200_000, description="largest prompt (all message contents together)"
    )
    fast_path: bool = Field(
        True, description="serve POST /v1/requests as plain ASGI (see streams.ingress.fastpath)"
    )
    decision_cache: int = Field(
        65_536, ge=0, description="recent decisions kept in process (for idempotent retries)"
    )
