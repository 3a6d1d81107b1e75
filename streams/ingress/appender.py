"""Appends from concurrent HTTP requests, batched: many requests per publish frame.

RabbitMQ spends about the same on a one-record chunk as on a chunk of a hundred records (on
this project's 2-core machine: ~0.5 ms each, so ~2,000 single-record appends/s at most, for
all streams together), so one frame per HTTP request would cap the API far below its target.
Each :meth:`Appender.append` queues its record for its stream and waits for its confirm; a
stream has at most ``max_in_flight`` batches sent and not yet confirmed, and whatever queues
meanwhile goes out as the next batch as soon as one is confirmed. Batches are therefore one
record when the load is light (no added latency) and grow with the load (throughput).
Submissions to one stream keep their order. A failed send or confirm fails every caller of
the batch (each answers 503): nothing is reported as appended that was not confirmed.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from events import encode
from events.base import Event
from streams.log import EventLog
from streams.topics import Topic

_MAX_BATCH = 1000


@dataclass
class _Stream:
    pending: list[tuple[bytes, asyncio.Future[None]]] = field(default_factory=list)
    in_flight: int = 0
    scheduled: bool = False


class Appender:
    def __init__(self, log: EventLog, max_in_flight: int = 2) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        self._log = log
        self._max_in_flight = max_in_flight
        self._streams: dict[str, _Stream] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.records = 0

    async def append(self, topic: Topic, event: Event) -> None:
        """Append ``event`` to its partition of ``topic``; return once it is confirmed."""
        stream = topic.stream_for(event.tenant_id) if topic.partitions > 1 else topic.stream(0)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        state = self._streams.get(stream)
        if state is None:
            state = self._streams[stream] = _Stream()
        state.pending.append((encode(event), done))
        if state.in_flight < self._max_in_flight and not state.scheduled:
            # at the end of this loop turn, so the appends of the same turn go together
            state.scheduled = True
            loop.call_soon(self._flush, stream, state)
        await done

    def _flush(self, stream: str, state: _Stream) -> None:
        state.scheduled = False
        if not state.pending or state.in_flight >= self._max_in_flight:
            return
        batch, state.pending = state.pending[:_MAX_BATCH], state.pending[_MAX_BATCH:]
        state.in_flight += 1
        task = asyncio.create_task(self._send(stream, state, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(
        self, stream: str, state: _Stream, batch: list[tuple[bytes, asyncio.Future[None]]]
    ) -> None:
        self.batches += 1
        self.records += len(batch)
        try:
            confirmed = await self._log.submit(stream, [payload for payload, _ in batch])
            await confirmed
        except asyncio.CancelledError:
            for _, done in batch:
                done.cancel()
            raise
        except Exception as exc:
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
        else:
            for _, done in batch:
                if not done.done():
                    done.set_result(None)
        finally:
            state.in_flight -= 1
            if state.pending and not state.scheduled:
                state.scheduled = True
                asyncio.get_running_loop().call_soon(self._flush, stream, state)

    async def close(self) -> None:
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
