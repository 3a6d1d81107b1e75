"""The ingress deployment served by a real uvicorn on 127.0.0.1 from a background thread (for
clients that are synchronous, like schemathesis)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import uvicorn

from quotaflow.settings import Settings
from tests.ingress.harness import ADMIN_KEY, deployment


class ServedDeployment:
    def __init__(self, base: Settings, unique: str, **overrides: Any) -> None:
        self._base = base
        self._unique = unique
        self._overrides = overrides
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ingress-server", daemon=True)
        self.url = ""
        self.tenant = "fuzz"
        self.tenant_key = ""
        self.admin_key = ADMIN_KEY
        self.openapi: dict[str, Any] = {}

    def __enter__(self) -> ServedDeployment:
        self._thread.start()
        if not self._ready.wait(120) or self._error is not None:
            self.__exit__()
            raise RuntimeError("the ingress server did not start") from self._error
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(120)
        if self._thread.is_alive():
            raise RuntimeError("the ingress server did not stop")

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with deployment(self._base, self._unique, **self._overrides) as env:
            headers = await env.create_tenant(self.tenant, token_budget=10**12)
            self.tenant_key = headers["Authorization"].removeprefix("Bearer ")
            self.openapi = env.api.openapi()
            config = uvicorn.Config(
                env.api, host="127.0.0.1", port=0, lifespan="off", access_log=False,
                log_level="warning",
            )  # fmt: skip
            server = uvicorn.Server(config)
            serving = asyncio.create_task(server.serve())
            while not server.started:
                if serving.done():
                    await serving
                await asyncio.sleep(0.01)
            port = server.servers[0].sockets[0].getsockname()[1]
            self.url = f"http://127.0.0.1:{port}"
            self._ready.set()
            await self._stop.wait()
            server.should_exit = True
            await serving
