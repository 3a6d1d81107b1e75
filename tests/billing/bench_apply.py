"""How fast the billing projection applies a realistic log.

    .venv/bin/python -m tests.billing.bench_apply [--requests 50000] [--batch 5000]

Builds a log with the builder of the tests (80% settled, 8% rejected, 5% failed → released,
5% expired, 2% in flight; 3 tenants, 2 models, 2 partitions, a few price changes), merges the
streams by event time as a projection reading them all would see them, and applies it in
batches to a scratch schema of the settings' database. Only the ``apply`` calls are timed:
wall clock, and the CPU time of this process and of its PostgreSQL backend (read from /proc
when the server is local), which say more than the wall clock on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from psycopg import AsyncConnection, sql

from projections.billing import apply, migrate, totals
from projections.billing.rows import fold
from quotaflow.settings import get_settings

from .builder import Item, LogBuilder
from .reference import flat, tenant_totals


def build(requests: int, seed: int) -> LogBuilder:
    rng = random.Random(seed)
    log = LogBuilder()
    for step in range(4):
        log.price("llama-8b", f"0.{20 + step}", f"0.{60 + step}")
        log.price("smollm2", f"0.0{1 + step}", f"0.0{2 + step}")
        log.traffic(rng, requests // 4, gap_s=5.0)
    return log


@dataclass(frozen=True)
class Timing:
    wall_s: float
    client_cpu_s: float
    server_cpu_s: float | None  # None when the server's /proc is not ours to read


def _server_cpu(pid: int) -> float | None:
    """CPU seconds of a local PostgreSQL backend, from /proc (Linux, same machine)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(items: list[Item], batch: int, dsn: str) -> Timing:
    schema = f"billing_bench_{uuid.uuid4().hex[:8]}"
    async with await AsyncConnection.connect(dsn) as conn:
        await migrate(conn, schema)
        try:
            server_before = _server_cpu(conn.info.backend_pid)
            cpu_before = time.process_time()
            started = time.perf_counter()
            for start in range(0, len(items), batch):
                await apply(conn, items[start : start + batch], schema)
            elapsed = time.perf_counter() - started
            client_cpu = time.process_time() - cpu_before
            server_after = _server_cpu(conn.info.backend_pid)
            found = await totals(conn, schema)
            events = [event for _, _, event in items]
            assert flat(found) == tenant_totals(events), "the view disagrees with the events"
        finally:
            async with conn.transaction():
                await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    server_cpu = (
        None if server_before is None or server_after is None else server_after - server_before
    )
    return Timing(elapsed, client_cpu, server_cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--batch", type=int, action="append")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dsn", default=get_settings().postgres_dsn)
    parser.add_argument("--freeze", action="store_true", help="gc.freeze() the built log")
    args = parser.parse_args()

    t0 = time.perf_counter()
    log = build(args.requests, args.seed)
    by_time = log.items()
    shuffled = log.items(random.Random(args.seed))
    print(f"built {len(by_time)} events in {time.perf_counter() - t0:.1f}s")
    if args.freeze:
        # A projection holds one batch, not the whole log: keep the log out of the collector's
        # sight, or each full collection walks its million objects.
        gc.freeze()

    for batch in args.batch or [1_000, 5_000, 20_000]:
        t0 = time.perf_counter()
        for start in range(0, len(by_time), batch):
            fold(event for _, _, event in by_time[start : start + batch])
        rate = len(by_time) / (time.perf_counter() - t0)
        print(f"batch {batch:>6} {'pure fold alone':<20} {rate:>10,.0f} events/s")
        for name, items in (("by event time", by_time), ("random interleaving", shuffled)):
            timing = asyncio.run(run(items, batch, args.dsn))
            n = len(items)
            server = "?" if timing.server_cpu_s is None else f"{timing.server_cpu_s / n * 1e6:.1f}"
            print(
                f"batch {batch:>6} {name:<20} {n / timing.wall_s:>10,.0f} events/s"
                f" ({n} events in {timing.wall_s:.2f}s; CPU µs/event:"
                f" client {timing.client_cpu_s / n * 1e6:.1f}, server {server})"
            )


if __name__ == "__main__":
    main()
