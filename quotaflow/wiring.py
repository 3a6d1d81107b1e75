"""Builds the objects a quotaflow process runs from its settings."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from quotaflow.settings import Settings
from streams.log import EventLog
from streams.memory_log import MemoryEventLog
from streams.rabbit_log import RabbitEventLog, Retention
from streams.runtime.app import App
from streams.runtime.ownership import Ownership, PgOwnership, StaticOwnership
from streams.topics import Topology

AppFactory = Callable[[Settings], App]


def topology(settings: Settings) -> Topology:
    return Topology(partitions=settings.partitions, prefix=settings.stream_prefix)


def event_log(settings: Settings, name: str = "quotaflow") -> EventLog:
    if settings.log == "memory":
        return MemoryEventLog()
    if settings.log == "kafka":
        from streams.kafka_log import KafkaEventLog

        return KafkaEventLog(
            settings.kafka_bootstrap_servers,
            name=name,
            replication_factor=settings.kafka_replication_factor,
            topic_config={"retention.bytes": str(settings.retention_max_bytes)},
        )
    retention = Retention(
        max_bytes=settings.retention_max_bytes, max_segment_bytes=settings.retention_segment_bytes
    )
    return RabbitEventLog(settings.stream_endpoint, retention=retention, name=name)


def build_app(settings: Settings) -> App:
    """The quotaflow app with every agent registered."""
    from streams.agents.billing import BillingStore, register_billing
    from streams.agents.inference import register_inference
    from streams.agents.quota import register_quota
    from streams.agents.quota_view import QuotaViewStore, register_quota_view
    from streams.agents.request_results import ResultsStore, register_request_results
    from streams.agents.tenant_directory import DirectoryStore, register_tenant_directory

    app = App("quotaflow", event_log(settings), topology=topology(settings))
    register_quota(app, tick_s=settings.quota_tick_s or None)
    register_quota_view(app, QuotaViewStore(settings.redis_url, settings.redis_prefix))
    register_billing(app, BillingStore(settings.postgres_dsn, settings.billing_schema))
    register_tenant_directory(app, DirectoryStore(settings.redis_url, settings.redis_prefix))
    register_request_results(app, ResultsStore(settings.redis_url, settings.redis_prefix))
    register_inference(app, settings)
    return app


def load_factory(spec: str) -> AppFactory:
    """``module:function`` → the factory (for tests and custom deployments)."""
    module, _, attr = spec.partition(":")
    factory = getattr(importlib.import_module(module), attr or "build_app")
    if not callable(factory):
        raise TypeError(f"{spec} is not callable")
    return factory  # type: ignore[no-any-return]


def ownership(settings: Settings, kind: str) -> Ownership:
    if kind == "static":
        return StaticOwnership()
    return PgOwnership(settings.postgres_dsn, namespace=settings.stream_prefix or "quotaflow")
