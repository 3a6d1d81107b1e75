"""The chaos run's clients: open-loop HTTP load with idempotency keys, retried through faults.

Request ``i`` is sent at ``i / rate`` seconds (fewer when ``concurrency`` requests are already
waiting) with ``Idempotency-Key: <run>-<i>``. A connection error or a 5xx (a 503 while the
tenant directory is rebuilt after a Redis flush) is retried with the same key, with backoff,
until ``give_up_s``: this is what a well-behaved client does, and the server promises that a
retry returns the same request. 202 and 429 are answers; any other 4xx, a 401 included, is a
refusal the run reports (it should not happen: the keys and bodies are valid).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import httpx

Kind = Literal["accepted", "rejected", "refused", "unanswered"]
RETRY_STATUS = {500, 502, 503, 504}


@dataclass(frozen=True)
class Client:
    tenant_id: str
    key: str
    weight: float = 1.0


@dataclass(frozen=True)
class Outcome:
    index: int
    tenant_id: str
    kind: Kind
    request_id: str | None
    detail: str
    attempts: int
    latency_ms: float
    answered_at_s: float = 0.0  # since the load started


@dataclass
class LoadReport:
    outcomes: list[Outcome] = field(default_factory=list)
    retried_because: Counter[str] = field(default_factory=Counter)

    def count(self, kind: Kind) -> int:
        return sum(1 for o in self.outcomes if o.kind == kind)

    def acknowledged(self) -> list[str]:
        return [o.request_id for o in self.outcomes if o.kind == "accepted" and o.request_id]


@dataclass
class Load:
    url: str
    clients: Sequence[Client]
    total: int
    rate: float
    run_id: str
    concurrency: int = 64
    give_up_s: float = 300.0
    seed: int = 7
    on_progress: Callable[[int], None] = lambda n: None
    report: LoadReport = field(default_factory=LoadReport)
    _started: float = 0.0

    async def run(self) -> LoadReport:
        rng = random.Random(self.seed)
        weights = [c.weight for c in self.clients]
        picks = rng.choices(range(len(self.clients)), weights=weights, k=self.total)
        limits = httpx.Limits(
            max_connections=self.concurrency, max_keepalive_connections=self.concurrency
        )
        gate = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(base_url=self.url, timeout=30.0, limits=limits) as http:
            start = self._started = time.monotonic()
            tasks = []
            for i in range(self.total):
                delay = start + i / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await gate.acquire()
                body = {
                    "model": "echo",
                    "prompt": f"chaos request {i}: {rng.random():.6f}",
                    "max_tokens": rng.randint(8, 48),
                }
                tasks.append(
                    asyncio.create_task(self._one(http, gate, i, self.clients[picks[i]], body))
                )
            await asyncio.gather(*tasks)
        self.report.outcomes.sort(key=lambda o: o.index)
        return self.report

    async def _one(
        self,
        http: httpx.AsyncClient,
        gate: asyncio.Semaphore,
        i: int,
        client: Client,
        body: dict[str, object],
    ) -> None:
        try:
            outcome = await self._send(http, i, client, body)
            outcome = replace(outcome, answered_at_s=time.monotonic() - self._started)
            self.report.outcomes.append(outcome)
            self.on_progress(len(self.report.outcomes))
        finally:
            gate.release()

    async def _send(
        self, http: httpx.AsyncClient, i: int, client: Client, body: dict[str, object]
    ) -> Outcome:
        headers = {"Authorization": f"Bearer {client.key}", "Idempotency-Key": f"{self.run_id}-{i}"}
        began = time.monotonic()
        deadline = began + self.give_up_s
        attempts, backoff, last = 0, 0.2, ""
        while True:
            attempts += 1
            try:
                r = await http.post("/v1/requests", json=body, headers=headers)
            except httpx.TransportError as exc:
                last = type(exc).__name__
            else:
                elapsed = (time.monotonic() - began) * 1000
                if r.status_code == 202:
                    rid = r.json()["request_id"]
                    return Outcome(
                        i, client.tenant_id, "accepted", rid, r.json()["status"], attempts, elapsed
                    )
                if r.status_code == 429:
                    details = r.json()["error"].get("details") or {}
                    rid = details.get("request_id")
                    return Outcome(
                        i,
                        client.tenant_id,
                        "rejected",
                        rid,
                        str(details.get("reason")),
                        attempts,
                        elapsed,
                    )
                if r.status_code not in RETRY_STATUS:
                    return Outcome(
                        i,
                        client.tenant_id,
                        "refused",
                        None,
                        f"{r.status_code} {r.text[:200]}",
                        attempts,
                        elapsed,
                    )
                last = str(r.status_code)
            self.report.retried_because[last] += 1
            if time.monotonic() + backoff > deadline:
                elapsed = (time.monotonic() - began) * 1000
                return Outcome(i, client.tenant_id, "unanswered", None, last, attempts, elapsed)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)
