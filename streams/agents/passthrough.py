"""A pass-through agent: each input event is re-emitted, as a derived event, to a sink.

Used by the runtime's crash tests and by ``just bench-agents`` (decode → agent → encode →
publish, with exactly-once semantics).
"""

from __future__ import annotations

from events import derive_id
from streams.runtime import App, AppTopic, Stream


def register_passthrough(
    app: App, source: AppTopic, sink: AppTopic, name: str = "passthrough"
) -> None:
    @app.agent(source, name=name)
    async def passthrough(stream: Stream) -> None:
        async for event in stream:
            copy = event.model_copy(
                update={"event_id": derive_id(event.event_id, name), "causation_id": event.event_id}
            )
            sink.emit(copy, cause=event)
