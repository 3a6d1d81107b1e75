"""One agent on one partition: read, decode, deliver, emit, make durable, commit.

Exactly-once, log to log
------------------------
Every output is published by a *named publisher* per (agent, input stream, output stream)
with a publishing id derived from its cause, the input record it was emitted for::

    publishing_id = (cause_offset + 1) << 16 | n      # n: n-th output of that cause there

RabbitMQ stores a record only if its id is above the publisher's last stored id, so when the
agent re-processes input after a crash, every output it had already stored is dropped by the
broker (and, cheaper, by the worker itself, which asks the broker for the publisher's last id
and skips what is at or below it). Outputs are flushed in publishing-id order whenever the
agent asks for more input and nothing is buffered, i.e. when everything delivered so far has
been processed; the input position is committed only after those outputs are confirmed.
Where the agent resumes depends on its :class:`~streams.runtime.agent.Ack` policy:
``CHECKPOINT`` after the committed offset, ``REPLAY`` from the first offset (state is a fold
of the input; nothing already published is sent twice), ``EXTERNAL`` where the agent's own
store says (projections write their effect and position in one transaction).

An output's event id is derived from its cause's (``events.derive_id``), so a re-emitted
event is also recognisably the same event on a log without publisher deduplication.

Failures
--------
Bytes that do not decode go to the dead-letter stream and the agent goes on. An exception
from the agent is either retryable (connection loss, timeouts, :class:`Retryable`): the
worker restarts from its resume point with backoff and never skips input; or not: the event
the agent was working on is dead-lettered and the agent restarts after it. When the agent
was working on a batch, the batch is first replayed one event at a time to find the culprit.
The dead-letter stream is read at start, so a poison record is skipped on every later replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from events import ClockTicked, DecodeError, decode, encode
from events.base import Event
from events.model import SYSTEM_TENANT
from streams.log import Position, Record, StreamNotFound, read_until_tail
from streams.runtime import metrics
from streams.runtime.agent import Ack, AgentSpec
from streams.runtime.deadletter import DeadLetter
from streams.runtime.errors import is_retryable
from streams.runtime.stream import Delivery, Stream
from streams.topics import Topic

if TYPE_CHECKING:
    from streams.runtime.app import App

log = logging.getLogger(__name__)

#: The worker of the agent running in this task (how ``AppTopic.send`` finds it).
CURRENT: contextvars.ContextVar[PartitionWorker | None] = contextvars.ContextVar(
    "quotaflow_worker", default=None
)

_OUTPUTS_PER_CAUSE = 1 << 16
_COMMIT_INTERVAL = 1.0
_MAX_INFLIGHT = 4
_STOP_GRACE = 30.0


class _Poisoned(Exception):
    """An input record was dead-lettered after the agent failed on it: restart after it."""


class PartitionWorker:
    def __init__(self, app: App, spec: AgentSpec, partition: int) -> None:
        self.app = app
        self.spec = spec
        self.partition = partition
        self.reference = f"{app.name}.{spec.name}"
        self._labels = (spec.name, str(partition))
        self._stopping = asyncio.Event()
        self._done_pos: dict[str, int] = {}  # last flushed offset per input stream
        self._committed_at = 0.0
        self._skip: set[tuple[str, int]] = set()
        self._isolate: dict[str, int] = {}
        self._seq: dict[str, int] = {}
        self.restarts = 0
        self._reset_run_state()

    def _reset_run_state(self) -> None:
        self._queue: asyncio.Queue[tuple[str, list[Record]]] = asyncio.Queue(maxsize=8)
        self._pulled: dict[str, int] = {}
        self._pending: dict[tuple[str, str], list[tuple[int, bytes]]] = defaultdict(list)
        self._per_cause: dict[tuple[str, int], int] = defaultdict(int)
        self._causes: dict[int, Delivery] = {}
        self._stream: Stream | None = None
        self._seq = {}
        self._inflight: deque[tuple[list[asyncio.Future[None]], dict[str, int], float]] = deque()

    # -- lifecycle ----------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        ticker = asyncio.create_task(self._tick()) if self.spec.tick_s else None
        try:
            await self._run_forever()
        finally:
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker

    async def _tick(self) -> None:
        """Append a ClockTicked to the first input partition every ``tick_s`` seconds."""
        assert self.spec.tick_s is not None
        stream = self.spec.inputs[0].stream(self.partition)
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.spec.tick_s)
            if self._stopping.is_set():
                return
            tick = ClockTicked(tenant_id=SYSTEM_TENANT, partition=self.partition)
            try:
                await self.app.log.append(stream, [encode(tick)])
            except Exception as exc:  # a missed tick only delays expiry until the next one
                log.warning("%s: clock tick not appended (%r)", stream, exc)

    async def _run_forever(self) -> None:
        delay = 0.2
        while not self._stopping.is_set():
            try:
                await self._run_once()
                if self._stopping.is_set():
                    return
                log.warning("agent %s[%s] returned; restarting it", *self._labels)
            except _Poisoned:
                self.restarts += 1
                continue
            except Exception as exc:
                self.restarts += 1
                kind = (
                    "retryable"
                    if is_retryable(exc) or isinstance(exc, StreamNotFound)
                    else "runtime"
                )
                metrics.ERRORS.labels(*self._labels, kind).inc()
                log.warning(
                    "agent %s[%s] failed (%r); restarting in %.1fs",
                    *self._labels,
                    exc,
                    delay,
                    exc_info=kind == "runtime",
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                delay = min(delay * 2, 10.0)
                continue
            delay = 0.2

    async def _run_once(self) -> None:
        self._reset_run_state()
        self._skip |= await self._dead_lettered()
        starts = await self._resume_positions()
        subs = [self.app.log.subscribe(s, p, batch=self.spec.batch) for s, p in starts.items()]
        pumps = [
            asyncio.create_task(self._pump(sub, s)) for sub, s in zip(subs, starts, strict=True)
        ]
        stream = self._stream = Stream(self, self.spec.name)
        token = CURRENT.set(self)
        agent = asyncio.create_task(self.spec.fn(stream), name=f"agent {self.reference}")
        CURRENT.reset(token)
        stop_wait = asyncio.create_task(self._stopping.wait())
        try:
            done, _ = await asyncio.wait(
                {agent, stop_wait, *pumps}, return_when=asyncio.FIRST_COMPLETED
            )
            if stop_wait in done and not agent.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(agent), _STOP_GRACE)
            for pump in pumps:
                if pump.done() and pump.exception() is not None and not agent.done():
                    raise pump.exception()  # type: ignore[misc]
            if not agent.done():
                agent.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await agent
                return
            exc = agent.exception()
            if exc is None:
                await self.flush(stream.buffered, final=True)
                return
            await self._agent_failed(exc)
        finally:
            for task in (stop_wait, *pumps, agent):
                task.cancel()
            for task in (stop_wait, *pumps, agent):
                with contextlib.suppress(BaseException):
                    await task
            for sub in subs:
                await sub.close()
            for futures, _, _ in self._inflight:
                for future in futures:
                    future.cancel()
                    with contextlib.suppress(BaseException):
                        await future

    async def _pump(self, sub: object, stream: str) -> None:
        async for records in sub:  # type: ignore[attr-defined]
            await self._queue.put((stream, records))

    async def _resume_positions(self) -> dict[str, Position]:
        streams = self.spec.input_streams(self.partition)
        match self.spec.ack:
            case Ack.REPLAY:
                return {s: Position.first() for s in streams}
            case Ack.EXTERNAL:
                assert self.spec.positions is not None
                stored = await self.spec.positions(self.partition)
                return {
                    s: Position.after(v if (v := stored.get(s, -1)) >= 0 else None) for s in streams
                }
            case Ack.CHECKPOINT:
                out = {}
                for s in streams:
                    done = self._done_pos.get(s)
                    if done is None:
                        done = await self.app.offsets.load(self.reference, s)
                    out[s] = Position.after(done)
                return out
        raise AssertionError(self.spec.ack)

    # -- the Source protocol the Stream uses -----------------------------------------

    async def next_chunk(self, timeout: float | None) -> list[Delivery] | None:
        while True:
            if self._stopping.is_set():
                raise StopAsyncIteration
            if self._inflight and self._queue.empty():
                await self._drain()  # nothing to do but wait: let the confirms land first
            getter = asyncio.ensure_future(self._queue.get())
            stopper = asyncio.ensure_future(self._stopping.wait())
            try:
                done, _ = await asyncio.wait(
                    {getter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                stopper.cancel()
            if getter not in done:
                getter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await getter
                if self._stopping.is_set():
                    raise StopAsyncIteration
                return None
            stream, records = getter.result()
            deliveries = await self._decode(stream, records)
            if deliveries:
                return deliveries
            if timeout is not None:
                return None

    async def _decode(self, stream: str, records: list[Record]) -> list[Delivery]:
        out: list[Delivery] = []
        accepts = self.spec.accepts
        skip = self._skip
        for r in records:
            if skip and (stream, r.offset) in skip:
                continue
            try:
                event = decode(r.data)
            except DecodeError as exc:
                await self._dead_letter(stream, r.offset, r.data, "decode", str(exc))
                continue
            if accepts is not None and event.type not in accepts:
                continue
            out.append(Delivery(stream, r.offset, r.timestamp_ms, event, r.data))
        self._causes.update({id(d.event): d for d in out})
        if records:
            self._pulled[stream] = records[-1].offset
        metrics.EVENTS_IN.labels(*self._labels).inc(len(records))
        return out

    @property
    def isolating(self) -> bool:
        """True while re-processing a failed batch one event at a time."""
        return bool(self._isolate)

    # -- emitting -----------------------------------------------------------------------

    def emit(self, topic: Topic, event: Event, cause: Event | Delivery) -> None:
        delivery = cause if isinstance(cause, Delivery) else self._causes.get(id(cause))
        if delivery is None:
            raise ValueError(
                f"{self.reference}: the cause of an emitted event must be an input event "
                "delivered to this agent since it last asked for input"
            )
        out_stream = topic.stream_for(event.tenant_id) if topic.partitions > 1 else topic.stream(0)
        publisher = f"{self.reference}:{delivery.stream}>{out_stream}"
        key = (publisher, delivery.offset)
        n = self._per_cause[key]
        if n >= _OUTPUTS_PER_CAUSE:
            raise ValueError(f"more than {_OUTPUTS_PER_CAUSE} outputs for one input record")
        self._per_cause[key] = n + 1
        pid = ((delivery.offset + 1) << 16) | n
        self._pending[(publisher, out_stream)].append((pid, encode(event)))

    async def flush(self, buffered: Sequence[Delivery] = (), final: bool = False) -> None:
        """Send pending outputs; once the broker confirms them, commit input positions.

        Up to ``_MAX_INFLIGHT`` flushes wait for confirms while the agent goes on with the
        next input; positions are committed strictly in order, only after their outputs are
        confirmed. ``final`` waits for everything.
        """
        futures: list[asyncio.Future[None]] = []
        if self._pending:
            pending, self._pending = self._pending, defaultdict(list)
            for (publisher, stream), items in pending.items():
                future = await self._submit(publisher, stream, items)
                if future is not None:
                    futures.append(future)
        self._per_cause.clear()
        positions = dict(self._pulled)
        if buffered:
            # not handed out yet: commit only up to the first buffered record of each stream
            for d in buffered:
                if d.offset - 1 < positions[d.stream]:
                    positions[d.stream] = d.offset - 1
            self._causes = {id(d.event): d for d in buffered}
        else:
            self._causes.clear()
        self._inflight.append((futures, positions, time.perf_counter()))
        while self._inflight and (
            final
            or len(self._inflight) > _MAX_INFLIGHT
            or all(f.done() for f in self._inflight[0][0])
        ):
            futures, positions, started = self._inflight.popleft()
            for future in futures:
                await future
            if futures:
                metrics.FLUSH_SECONDS.labels(self.spec.name).observe(time.perf_counter() - started)
            await self._positions_durable(positions, final)

    async def _drain(self) -> None:
        while self._inflight:
            futures, positions, _ = self._inflight.popleft()
            for future in futures:
                await future
            await self._positions_durable(positions, final=not self._inflight)

    async def _positions_durable(self, positions: dict[str, int], final: bool) -> None:
        for stream, offset in positions.items():
            self._done_pos[stream] = offset
            metrics.POSITION.labels(self.spec.name, stream).set(offset)
        if self._isolate and all(self._done_pos.get(s, -1) >= o for s, o in self._isolate.items()):
            self._isolate.clear()
        if self.spec.ack is Ack.CHECKPOINT and self._done_pos:
            now = time.monotonic()
            if final or now - self._committed_at >= _COMMIT_INTERVAL:
                self._committed_at = now
                for stream, offset in self._done_pos.items():
                    await self.app.offsets.store(self.reference, stream, offset)

    async def _submit(
        self, publisher: str, stream: str, items: list[tuple[int, bytes]]
    ) -> asyncio.Future[None] | None:
        last = self._seq.get(publisher)
        if last is None:
            last = await self.app.log.last_sequence(stream, publisher)
        items.sort(key=lambda item: item[0])
        fresh = [item for item in items if item[0] > last]
        if not fresh:
            self._seq[publisher] = last
            return None
        future = await self.app.log.submit(
            stream,
            [payload for _, payload in fresh],
            publisher=publisher,
            publishing_ids=[pid for pid, _ in fresh],
        )
        self._seq[publisher] = fresh[-1][0]
        metrics.EVENTS_OUT.labels(*self._labels).inc(len(fresh))
        return future

    # -- failures -----------------------------------------------------------------------

    async def _agent_failed(self, exc: BaseException) -> None:
        if is_retryable(exc):
            raise exc
        current = self._stream.working_on if self._stream is not None else []
        metrics.ERRORS.labels(*self._labels, "handler").inc()
        if len(current) == 1:
            item = current[0]
            data = item.data
            log.error(
                "agent %s[%s] failed on %s@%d: %r; dead-lettering it",
                *self._labels,
                item.stream,
                item.offset,
                exc,
            )
            await self._dead_letter(item.stream, item.offset, data, "handler", repr(exc))
            raise _Poisoned from exc
        if current:
            for d in current:
                self._isolate[d.stream] = max(self._isolate.get(d.stream, -1), d.offset)
            log.warning(
                "agent %s[%s] failed on a batch of %d (%r): retrying it one event at a time",
                *self._labels,
                len(current),
                exc,
            )
            raise _Poisoned from exc
        raise exc

    async def _dead_letter(
        self, stream: str, offset: int, data: bytes, kind: Literal["decode", "handler"], error: str
    ) -> None:
        letter = DeadLetter.of(self.spec.name, stream, offset, kind, error, data)
        dlq = self.app.topology.deadletter.stream(0)
        await self.app.log.append(
            dlq,
            [letter.encode()],
            publisher=f"{self.reference}:{stream}>dlq",
            publishing_ids=[(offset + 1) << 16],
        )
        self._skip.add((stream, offset))
        metrics.DEAD_LETTERS.labels(*self._labels).inc()

    async def _dead_lettered(self) -> set[tuple[str, int]]:
        dlq = self.app.topology.deadletter.stream(0)
        mine = set(self.spec.input_streams(self.partition))
        found: set[tuple[str, int]] = set()
        async for records in read_until_tail(self.app.log, dlq, Position.first()):
            for r in records:
                with contextlib.suppress(ValueError):
                    letter = DeadLetter.decode(r.data)
                    if letter.agent == self.spec.name and letter.stream in mine:
                        found.add((letter.stream, letter.offset))
        return found

    async def lag(self) -> dict[str, int]:
        """Offsets between each input stream's tail and this worker's position."""
        out = {}
        for stream in self.spec.input_streams(self.partition):
            tail = await self.app.log.tail(stream)
            done = self._done_pos.get(stream, -1)
            out[stream] = max(tail - done - 1, 0)
            metrics.LAG.labels(*self._labels, stream).set(out[stream])
        return out
