"""The Kafka requests the Kafka backend makes below aiokafka's producer and consumer API:
topic existence without auto-creation, and committed offsets without joining a group.

Errors come out as the runtime understands them: a Kafka error that may go away by itself
(a lost connection, a timeout, a moving leader or coordinator) becomes
:class:`KafkaUnavailable`, a :class:`ConnectionError`, which agents retry without skipping
input; a record too large becomes :class:`streams.log.PublishRejected`; anything else a
:class:`streams.log.LogError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from aiokafka import errors as kerr
from aiokafka.client import AIOKafkaClient, CoordinationType
from aiokafka.protocol.commit import OffsetCommitRequest, OffsetFetchRequest
from aiokafka.protocol.metadata import MetadataRequest

from streams.log import LogError, PublishRejected

_UNKNOWN_TOPIC = kerr.UnknownTopicOrPartitionError.errno
_NOT_COORDINATOR = (
    kerr.NotCoordinatorForGroupError.errno,
    kerr.GroupCoordinatorNotAvailableError.errno,
    kerr.GroupLoadInProgressError.errno,
)


class KafkaUnavailable(ConnectionError):
    """The Kafka cluster did not answer in time or answered "try again"."""


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, kerr.KafkaError) and (
        exc.retriable
        or isinstance(
            exc, kerr.KafkaTimeoutError | kerr.KafkaConnectionError | kerr.NoBrokersAvailable
        )
    )


@contextlib.contextmanager
def kafka_errors(what: str) -> Iterator[None]:
    """Translate aiokafka's errors raised inside the block (see the module docstring)."""
    try:
        yield
    except kerr.KafkaError as exc:
        if is_transient(exc):
            raise KafkaUnavailable(f"{what}: {exc}") from exc
        if isinstance(exc, kerr.MessageSizeTooLargeError | kerr.RecordTooLargeError):
            raise PublishRejected(f"{what}: {exc}") from exc
        raise LogError(f"{what}: {exc}") from exc


class KafkaRequests:
    """One bootstrapped connection pool for metadata and group-offset requests."""

    def __init__(self, client: AIOKafkaClient) -> None:
        self._client = client
        self._coordinators: dict[str, int] = {}

    async def topic_exists(self, topic: str) -> bool:
        """Ask for the topic's metadata without letting the broker auto-create it."""
        request = MetadataRequest([topic], allow_auto_topic_creation=False)
        with kafka_errors(f"metadata of {topic}"):
            response = await self._client.send(self._client.get_random_node(), request)
        for found in response.to_object()["topics"]:
            if found["topic"] == topic:
                return bool(found["error_code"] != _UNKNOWN_TOPIC and found["partitions"])
        return False

    async def commit(self, group: str, topic: str, partition: int, offset: int) -> None:
        """Store ``offset`` (Kafka's "next offset to read") for ``group`` on one partition,
        as a group without members does (generation -1), so no consumer has to join it."""
        request = OffsetCommitRequest(
            group,
            OffsetCommitRequest.DEFAULT_GENERATION_ID,
            "",
            OffsetCommitRequest.DEFAULT_RETENTION_TIME,
            [(topic, [(partition, offset, "")])],
        )
        response = await self._to_coordinator(group, request)
        for _topic, partitions in response.topics:
            for _partition, code in partitions:
                self._check(group, code, f"commit of {group} on {topic}")

    async def committed(self, group: str, topic: str, partition: int) -> int | None:
        """The offset ``group`` committed on one partition (None: none)."""
        response = await self._to_coordinator(
            group, OffsetFetchRequest(group, [(topic, [partition])])
        )
        with contextlib.suppress(AttributeError):  # v2+: an error for the whole request
            self._check(group, response.error_code, f"offsets of {group}")
        for _topic, partitions in response.topics:
            for found, offset, _metadata, code in partitions:
                if found != partition or code == _UNKNOWN_TOPIC:
                    continue
                self._check(group, code, f"offsets of {group} on {topic}")
                return None if offset < 0 else int(offset)
        return None

    async def _to_coordinator(self, group: str, request: Any) -> Any:
        with kafka_errors(f"group coordinator of {group}"):
            node = self._coordinators.get(group)
            if node is None:
                node = await self._client.coordinator_lookup(CoordinationType.GROUP, group)
                self._coordinators[group] = node
            return await self._client.send(node, request)

    def _check(self, group: str, code: int, what: str) -> None:
        if code == 0:
            return
        if code in _NOT_COORDINATOR:
            self._coordinators.pop(group, None)
        error = kerr.for_code(code)()
        with kafka_errors(what):
            raise error
