"""How the runtime classifies failures inside an agent."""

from __future__ import annotations

import asyncio


class Retryable(Exception):
    """Raise (or wrap) to say: try the same input again later, never skip it."""


def _optional_retryable() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = []
    try:
        import redis.exceptions as redis_exc

        found += [redis_exc.ConnectionError, redis_exc.TimeoutError, redis_exc.BusyLoadingError]
    except ImportError:  # pragma: no cover - redis is a dependency
        pass
    try:
        import psycopg

        found += [psycopg.OperationalError]
    except ImportError:  # pragma: no cover - psycopg is a dependency
        pass
    return tuple(found)


RETRYABLE: tuple[type[BaseException], ...] = (
    Retryable,
    ConnectionError,
    TimeoutError,
    asyncio.TimeoutError,
    OSError,
    *_optional_retryable(),
)


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, RETRYABLE)
