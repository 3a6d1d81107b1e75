"""The app the crash and failover tests run in subprocesses: a pass-through agent."""

from __future__ import annotations

from quotaflow.settings import Settings
from quotaflow.wiring import build_app
from streams.agents.passthrough import register_passthrough
from streams.runtime.app import App


def build(settings: Settings) -> App:
    app = build_app(settings)
    register_passthrough(app, app.topic(app.topology.requests), app.topic(app.topology.quota))
    return app
