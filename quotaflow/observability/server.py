"""An agent process's HTTP port: ``/metrics`` for Prometheus, ``/healthz`` and ``/readyz`` for
Kubernetes probes.

It serves from a daemon thread (prometheus_client's WSGI app), so a scrape never waits for the
agents' event loop. Because a thread answering says little about that loop, :func:`watched`
runs a heartbeat on it: ``/healthz`` answers 503 once the loop has not ticked for
``stale_after_s`` (a blocking call, a deadlock), so the liveness probe restarts the pod.
``/readyz`` answers 200 while the heartbeat runs.

A port that is taken (several agent processes on one machine, in tests) is logged and the
process goes on without the server: metrics are an aid, never a reason not to run.
"""

from __future__ import annotations

import asyncio
import logging
import socketserver
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app

log = logging.getLogger(__name__)
T = TypeVar("T")

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


class Health:
    """The heartbeat of an event loop, as the probes see it."""

    def __init__(self, stale_after_s: float = 60.0) -> None:
        self.stale_after_s = stale_after_s
        self._beat: float | None = None

    def beat(self) -> None:
        self._beat = time.monotonic()

    def stop(self) -> None:
        self._beat = None

    @property
    def ready(self) -> bool:
        return self._beat is not None

    @property
    def alive(self) -> bool:
        """True unless a started loop has stopped ticking (before it starts: alive, not ready)."""
        return self._beat is None or time.monotonic() - self._beat < self.stale_after_s


def health_app(metrics: WsgiApp, health: Health) -> WsgiApp:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)
        if path in ("/healthz", "/livez"):
            ok = health.alive
        elif path == "/readyz":
            ok = health.ready and health.alive
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: try /metrics, /healthz or /readyz\n"]
        status = "200 OK" if ok else "503 Service Unavailable"
        start_response(status, [("Content-Type", "text/plain")])
        return [b"ok\n" if ok else b"unhealthy\n"]

    return app


class MetricsServer:
    """A running server; ``close()`` is idempotent."""

    def __init__(self, httpd: WSGIServer, thread: threading.Thread, health: Health) -> None:
        self._httpd = httpd
        self._thread = thread
        self.health = health

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def close(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()


def start_metrics_server(
    port: int,
    host: str = "0.0.0.0",
    *,
    registry: CollectorRegistry = REGISTRY,
    stale_after_s: float = 60.0,
) -> MetricsServer | None:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` from a daemon thread.

    ``port`` 0 turns the server off; a port that cannot be bound is logged. Both return None.
    """
    if port == 0:
        return None
    health = Health(stale_after_s)
    try:
        httpd = make_server(
            host,
            port,
            health_app(make_wsgi_app(registry), health),
            server_class=_Server,
            handler_class=_QuietHandler,
        )
    except OSError as exc:
        log.warning("metrics server not started on %s:%d: %s", host, port, exc)
        return None
    thread = threading.Thread(target=httpd.serve_forever, name="metrics-server", daemon=True)
    thread.start()
    log.info("metrics on http://%s:%d/metrics", host, port)
    return MetricsServer(httpd, thread, health)


async def watched(
    server: MetricsServer | None, main: Awaitable[T], *, interval_s: float = 1.0
) -> T:
    """Await ``main`` while a heartbeat on this loop keeps ``server``'s probes green."""
    if server is None:
        return await main

    async def heartbeat() -> None:
        while True:
            server.health.beat()
            await asyncio.sleep(interval_s)

    beating = asyncio.create_task(heartbeat(), name="metrics-heartbeat")
    try:
        return await main
    finally:
        beating.cancel()
        server.health.stop()
