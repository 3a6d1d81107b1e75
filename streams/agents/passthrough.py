"""A pass-through agent: every input event is re-emitted, unchanged, to a sink.

It decodes and re-encodes each event and publishes it exactly once (the event keeps its id:
moving an event does not make a new fact). Used by the runtime's crash tests and by
``just bench-agents``.
"""

from __future__ import annotations

from streams.runtime import App, AppTopic, Stream


def register_passthrough(
    app: App, source: AppTopic, sink: AppTopic, name: str = "passthrough"
) -> None:
    @app.agent(source, name=name)
    async def passthrough(stream: Stream) -> None:
        async for event in stream:
            sink.emit(event, cause=event)
