"""Runs agents: keeps one worker per owned partition, follows ownership, stops cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from streams.runtime import metrics
from streams.runtime.app import App
from streams.runtime.ownership import Ownership
from streams.runtime.worker import PartitionWorker

log = logging.getLogger(__name__)


class AgentRunner:
    def __init__(
        self,
        app: App,
        agents: Sequence[str],
        ownership: Ownership,
        *,
        interval: float = 1.0,
        lag_every: int = 5,
    ) -> None:
        unknown = set(agents) - set(app.agents)
        if unknown:
            raise KeyError(f"unknown agents: {', '.join(sorted(unknown))}")
        self.app = app
        self.agents = list(agents)
        self.ownership = ownership
        self.interval = interval
        self.lag_every = lag_every
        self.workers: dict[tuple[str, int], tuple[PartitionWorker, asyncio.Task[None]]] = {}

    def owned(self, agent: str) -> set[int]:
        return {p for (a, p) in self.workers if a == agent}

    async def run(self, stop: asyncio.Event) -> None:
        tick = 0
        try:
            while not stop.is_set():
                for agent in self.agents:
                    await self._follow(agent)
                tick += 1
                if tick % self.lag_every == 0:
                    await self._measure_lag()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)
        finally:
            await self._stop_all()
            await self.ownership.close()

    async def _follow(self, agent: str) -> None:
        spec = self.app.agents[agent]
        try:
            want = await self.ownership.rebalance(agent, spec.partitions)
        except Exception as exc:
            log.error("ownership of %s unknown (%r): stopping its workers", agent, exc)
            want = set()
            for partition in self.owned(agent):
                await self._stop(agent, partition, release=False)
            return
        running = self.owned(agent)
        for partition in sorted(running - want):
            await self._stop(agent, partition, release=True)
        for partition in sorted(want - running):
            worker = self.app.worker(agent, partition)
            task = asyncio.create_task(worker.run(), name=f"{agent}[{partition}]")
            self.workers[(agent, partition)] = (worker, task)
            log.info("%s: took partition %d", agent, partition)
        metrics.OWNED_PARTITIONS.labels(agent).set(len(want))

    async def _stop(self, agent: str, partition: int, *, release: bool) -> None:
        worker, task = self.workers.pop((agent, partition))
        worker.stop()
        try:
            await asyncio.wait_for(task, 40)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
        except Exception:
            log.exception("%s[%d] stopped with an error", agent, partition)
        for stream in worker.spec.input_streams(partition):  # no stale series after a handover
            with contextlib.suppress(KeyError):
                metrics.LAG.remove(agent, str(partition), stream)
        if release:
            await self.ownership.release(agent, partition)
        log.info("%s: gave up partition %d", agent, partition)

    async def _stop_all(self) -> None:
        for agent, partition in list(self.workers):
            await self._stop(agent, partition, release=True)

    async def _measure_lag(self) -> None:
        for worker, _ in list(self.workers.values()):
            with contextlib.suppress(Exception):
                await worker.lag()
