"""Topics, partitions and stream names.

A topic ``requests`` with N partitions is the N RabbitMQ streams ``requests-0 …
requests-{N-1}`` (with an optional deployment prefix). A tenant always lands on partition
``murmur3_32(utf8(tenant_id), seed=104729) mod N`` — the hash RabbitMQ super streams use
(Java and Go clients), so the same streams can be declared a super stream on RabbitMQ ≥ 3.11
and other clients route identically. (rstream's own super stream producer hashes UTF-16
bytes with the 128-bit variant, which does not agree with the broker's other clients; we do
not use it.)

Every tenant-keyed topic has the same partition count, so partition p of ``requests`` and
partition p of ``quota`` hold the same tenants: an agent that owns input partition p writes
only to output partition p.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import mmh3

SUPER_STREAM_SEED = 104729


@lru_cache(maxsize=65536)
def partition_for(key: str, partitions: int) -> int:
    """The partition of ``key`` among ``partitions`` (RabbitMQ super stream routing)."""
    if partitions < 1:
        raise ValueError("partitions must be >= 1")
    return int(mmh3.hash(key.encode("utf-8"), SUPER_STREAM_SEED, signed=False)) % partitions


@dataclass(frozen=True, slots=True)
class Topic:
    """A named, partitioned topic. ``partitions == 1`` for global topics."""

    name: str
    partitions: int
    prefix: str = ""

    def stream(self, partition: int) -> str:
        if not 0 <= partition < self.partitions:
            raise ValueError(f"{self.name} has no partition {partition}")
        return f"{self.prefix}{self.name}-{partition}"

    @property
    def streams(self) -> list[str]:
        return [self.stream(p) for p in range(self.partitions)]

    def stream_for(self, key: str) -> str:
        return self.stream(partition_for(key, self.partitions))


@dataclass(frozen=True, slots=True)
class Topology:
    """The topics of one quotaflow deployment."""

    partitions: int
    prefix: str = ""

    @property
    def requests(self) -> Topic:
        """What the quota agent decides on: tenant admin, requests, inference results, ticks."""
        return Topic("requests", self.partitions, self.prefix)

    @property
    def quota(self) -> Topic:
        """The quota agent's decisions: reservations, rejections, settlements."""
        return Topic("quota", self.partitions, self.prefix)

    @property
    def catalog(self) -> Topic:
        """Global facts (prices)."""
        return Topic("catalog", 1, self.prefix)

    @property
    def deadletter(self) -> Topic:
        """Records an agent could not process, with the error and where they came from."""
        return Topic("deadletter", 1, self.prefix)

    @property
    def all(self) -> list[Topic]:
        return [self.requests, self.quota, self.catalog, self.deadletter]
