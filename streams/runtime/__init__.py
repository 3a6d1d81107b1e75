"""A Faust-style agent runtime on the EventLog port.

    app = App("quotaflow", log)
    requests = app.topic(topology.requests)
    copies = app.topic(topology.quota)

    @app.agent(requests, accepts=[InferenceRequested])
    async def copy(stream: Stream) -> None:
        async for event in stream:
            await copies.send(event.model_copy(...), cause=event)

See :mod:`streams.runtime.worker` for how exactly-once processing works.
"""

from streams.runtime.agent import Ack, AgentSpec
from streams.runtime.app import App, AppTopic
from streams.runtime.errors import Retryable
from streams.runtime.stream import Batch, Delivery, Stream

__all__ = [
    "Ack",
    "AgentSpec",
    "App",
    "AppTopic",
    "Batch",
    "Delivery",
    "Retryable",
    "Stream",
]
