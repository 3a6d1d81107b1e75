"""Opening rstream connections, with retries while a broker (re)starts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import types

from rstream import exceptions as rexc
from rstream.client import Client
from rstream.connection import Connection, ConnectionClosed

from quotaflow.settings import StreamEndpoint

log = logging.getLogger(__name__)

#: Errors after which the same operation may succeed once the broker has recovered.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
    rexc.StreamNotAvailable,
    rexc.LeaderNotAvailable,
    rexc.InternalError,
)
_CONNECT_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, rexc.ServerError)


async def open_client(
    endpoint: StreamEndpoint, name: str, *, frame_max: int = 1024 * 1024, heartbeat: int = 20
) -> Client:
    client = Client(
        host=endpoint.host,
        port=endpoint.port,
        frame_max=frame_max,
        heartbeat=heartbeat,
        connection_name=name,
    )
    try:
        await client.start()
        _read_whole_frames(client)
        await client.authenticate(
            vhost=endpoint.vhost, username=endpoint.username, password=endpoint.password
        )
    except BaseException:
        await close_quietly(client)
        raise
    return client


async def connect_with_retry(
    endpoint: StreamEndpoint, name: str, *, timeout: float = 60.0, frame_max: int = 1024 * 1024
) -> Client:
    """Connect, retrying with backoff for up to ``timeout`` seconds (a broker restarting)."""
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        try:
            return await open_client(endpoint, name, frame_max=frame_max)
        except _CONNECT_ERRORS as exc:
            if time.monotonic() + delay > deadline:
                raise ConnectionError(
                    f"RabbitMQ stream port {endpoint.host}:{endpoint.port} unreachable: {exc!r}"
                ) from exc
            log.info("stream broker not ready (%r), retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def close_quietly(client: Client) -> None:
    conn = client._conn
    try:
        await asyncio.wait_for(client.close(), 6)
    except Exception:  # closing a broken connection: nothing left to save
        log.debug("error closing stream connection", exc_info=True)
    # rstream leaves the socket of a broken connection open; close it ourselves
    writer = conn._writer if conn is not None else None
    if writer is not None and not writer.is_closing():
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 2)


async def _read_exactly(self: Connection, n: int) -> bytes:
    """Read ``n`` bytes in one call (rstream reads 256 bytes per call and re-concatenates,
    which dominates the cost of consuming large chunks)."""
    reader = self._reader
    assert reader is not None
    buffered = self._buffer
    if len(buffered) >= n:
        data = bytes(buffered[:n])
        del buffered[:n]
        return data
    try:
        rest = await reader.readexactly(n - len(buffered))
    except asyncio.IncompleteReadError:
        raise ConnectionClosed from None
    if buffered:
        data = bytes(buffered) + rest
        buffered.clear()
        return data
    return rest


def _read_whole_frames(client: Client) -> None:
    conn = client._conn
    if conn is not None:
        conn._read = types.MethodType(_read_exactly, conn)  # type: ignore[method-assign]
