"""The app the inference crash test runs in a subprocess: the inference agent alone."""

from __future__ import annotations

from quotaflow.settings import Settings
from quotaflow.wiring import event_log, topology
from streams.agents.inference import register_inference
from streams.runtime.app import App


def build(settings: Settings) -> App:
    app = App("quotaflow", event_log(settings), topology=topology(settings))
    register_inference(app, settings)
    return app
