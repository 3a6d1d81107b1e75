"""One typed settings object, read from ``QUOTAFLOW_*`` environment variables.

Every default runs against the local services that ``just services`` starts.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class StreamEndpoint:
    """The parts of a ``rabbitmq-stream://user:pass@host:port/vhost`` URL."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("rabbitmq-stream", "rabbitmq-stream+tls"):
            raise ValueError(f"not a rabbitmq-stream:// URL: {url!r}")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 5552
        self.username = unquote(parts.username or "guest")
        self.password = unquote(parts.password or "guest")
        self.vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        self.tls = parts.scheme.endswith("+tls")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUOTAFLOW_", extra="ignore")

    log: Literal["rabbitmq", "memory", "kafka"] = Field(
        "rabbitmq", description="which event log backend the processes use"
    )
    rabbitmq_url: str = "rabbitmq-stream://guest:guest@127.0.0.1:5552/%2f"
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Kafka brokers, comma-separated host:port (log=kafka)"
    )
    kafka_replication_factor: int = Field(1, ge=1, description="of each topic created (log=kafka)")
    redis_url: str = "redis://127.0.0.1:6379/0"
    postgres_dsn: str = "postgresql://postgres@127.0.0.1:5432/quotaflow"
    triton_url: str = "127.0.0.1:8001"
    partitions: int = Field(4, ge=1, le=256, description="partitions of each tenant-keyed topic")
    stream_prefix: str = Field("", description="prefix of every stream name (e.g. 'staging-')")
    retention_max_bytes: int = Field(20 * 1024**3, ge=1, description="per stream")
    retention_segment_bytes: int = Field(500 * 1024**2, ge=1)
    quota_tick_s: float = Field(
        10.0, ge=0, description="ClockTicked interval per idle partition, seconds (0: off)"
    )
    billing_schema: str = Field("billing", description="PostgreSQL schema of the billing view")
    redis_prefix: str = Field("qf:", description="key prefix of the Redis quota view")
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    admin_key: SecretStr = SecretStr("dev-admin-key")

    @property
    def stream_endpoint(self) -> StreamEndpoint:
        return StreamEndpoint(self.rabbitmq_url)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
