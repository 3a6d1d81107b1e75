"""The faults of a chaos run: what they are, when they happen, and how each is caused.

* ``kill:<process>``: SIGKILL one of ``quotaflow up``'s processes (the ingress, an agent
  group); the supervisor starts it again after its backoff.
* ``triton-down``: stop Triton for ``duration_s`` (the inference agent fails what it cannot
  run, and the quota releases those reservations).
* ``rabbitmq-restart``: stop and start the broker's application (every connection drops; the
  streams stay).
* ``postgres-restart``: a fast restart of the PostgreSQL cluster.
* ``redis-flush``: delete every key of this deployment (its Redis prefix) in one atomic script,
  as FLUSHALL would (``--flushall``: the whole Redis). The quota view, the tenant directory and
  the request results notice it and rebuild themselves from the log
  (``projections.view_guard``).

The schedule is random but reproducible (a seed), spread over the load's duration, and holds
every kind of fault at least once; each fault ends before the next begins.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from quotaflow.local import LocalSystem
from quotaflow.up import AGENT_PROCESSES, INGRESS, TRITON

PROCESSES = (INGRESS, *AGENT_PROCESSES)
SERVER_FAULTS = ("rabbitmq-restart", "postgres-restart", "redis-flush", "triton-down")


@dataclass(frozen=True)
class Fault:
    at_s: float
    kind: str
    duration_s: float = 0.0

    def __str__(self) -> str:
        extra = f" for {self.duration_s:.0f} s" if self.duration_s else ""
        return f"{self.kind}{extra}"


def schedule(
    duration_s: float,
    *,
    seed: int,
    kinds: Sequence[str] | None = None,
    extra_kills: int = 0,
    down_s: float = 15.0,
) -> list[Fault]:
    """Every kind once (every process killed once), plus ``extra_kills`` random kills, at
    shuffled, evenly spaced moments of ``duration_s``."""
    rng = random.Random(seed)
    base = (
        list(kinds) if kinds is not None else [f"kill:{p}" for p in PROCESSES] + list(SERVER_FAULTS)
    )
    base += [f"kill:{rng.choice(PROCESSES)}" for _ in range(extra_kills)]
    rng.shuffle(base)
    if not base:
        return []
    gap = duration_s / (len(base) + 1)
    out = []
    for i, kind in enumerate(base):
        at = gap * (i + 1) + rng.uniform(-gap / 4, gap / 4)
        out.append(Fault(max(1.0, at), kind, down_s if kind in ("triton-down",) else 0.0))
    return out


#: Every key matching ARGV[1], deleted in one script: atomic, as FLUSHALL is (a flush in many
#: steps would let a view rebuild from half-deleted data, which no real flush does).
_FLUSH_PREFIX = """
local cursor, n = '0', 0
repeat
  local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 5000)
  cursor = r[1]
  for _, k in ipairs(r[2]) do redis.call('UNLINK', k); n = n + 1 end
until cursor == '0'
return n
"""


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, timeout=180, capture_output=True)


def postgres_version() -> str:
    return sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]


@dataclass
class Faults:
    """Causes faults on one local deployment."""

    system: LocalSystem
    notify: Callable[[str], None]
    flushall: bool = False

    async def cause(self, fault: Fault) -> None:
        self.notify(f"fault: {fault}")
        kind = fault.kind
        sup = self.system.supervisor
        if kind.startswith("kill:"):
            if not sup.kill(kind.removeprefix("kill:")):
                self.notify(f"{kind}: it was not running")
        elif kind == "triton-down":
            if TRITON not in sup.names:
                self.notify("triton-down: skipped (Triton is not this run's own)")
                return
            await asyncio.to_thread(sup.hold, TRITON)
            try:
                await asyncio.sleep(fault.duration_s)
            finally:
                sup.release(TRITON)
        elif kind == "rabbitmq-restart":
            await asyncio.to_thread(_run, "rabbitmqctl", "-q", "stop_app")
            try:
                await asyncio.sleep(fault.duration_s or 2.0)
            finally:  # never leave the machine's broker stopped
                await asyncio.to_thread(_run, "rabbitmqctl", "-q", "start_app")
                await asyncio.to_thread(_run, "rabbitmqctl", "-q", "await_startup")
        elif kind == "postgres-restart":
            version = postgres_version()
            await asyncio.to_thread(
                _run,
                "pg_ctlcluster",
                "--skip-systemctl-redirect",
                version,
                "main",
                "restart",
                "-m",
                "fast",
            )
        elif kind == "redis-flush":
            await self._flush()
        else:
            raise ValueError(f"unknown fault {kind!r}")

    async def _flush(self) -> None:
        redis = Redis.from_url(self.system.settings.redis_url)
        try:
            if self.flushall:
                await redis.flushall()
                return
            prefix = self.system.settings.redis_prefix
            deleted = await redis.eval(_FLUSH_PREFIX, 0, prefix + "*")
            self.notify(f"redis-flush: deleted {deleted} keys under {prefix} at once")
        finally:
            await redis.aclose()
