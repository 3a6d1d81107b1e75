"""The observability settings of a process, read from ``QUOTAFLOW_*`` environment variables.

Kept apart from :class:`quotaflow.settings.Settings` so that logging, metrics and tracing can be
set up before (and without) the rest of the configuration.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Exporter = Literal["none", "console", "otlp"]
LogFormat = Literal["json", "console"]


class ObservabilitySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUOTAFLOW_", extra="ignore")

    metrics_host: str = Field("0.0.0.0", description="address of an agent's metrics server")
    metrics_port: int = Field(
        9100, ge=0, le=65535, description="port of /metrics, /healthz, /readyz; 0 turns it off"
    )
    metrics_max_tenants: int = Field(
        1000, ge=1, description="distinct tenant labels per process; the rest count as '_other'"
    )
    log_level: str = "INFO"
    log_format: LogFormat = "json"
    otel_exporter: Exporter = Field("none", description="where spans go: otlp, console or none")
    otel_service_name: str = Field("quotaflow", description="OpenTelemetry service.name")
