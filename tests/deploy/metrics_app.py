"""The app test_metrics_live.py runs in a subprocess: every quotaflow agent, plus ``token-meter``,
which feeds each decision of the ``quota`` topic to
:func:`quotaflow.observability.tokens.observe_decisions` (what the quota-view agent is meant
to do once wired)."""

from __future__ import annotations

from quotaflow.observability.tokens import observe_decisions
from quotaflow.settings import Settings
from quotaflow.wiring import build_app
from streams.runtime.app import App
from streams.runtime.stream import Stream


def build(settings: Settings) -> App:
    app = build_app(settings)

    @app.agent(app.topic(app.topology.quota), name="token-meter")
    async def token_meter(stream: Stream) -> None:
        async for batch in stream.take(500, within=0.05):
            observe_decisions(batch)

    return app
