"""Structured logs: one JSON object per line on stderr, for every logger of the process.

:func:`configure_logging` routes both structlog and the standard library's loggers (the
runtime's ``logging.getLogger(__name__)``) through one chain that adds the time, the level,
the logger, the OpenTelemetry trace and span ids, and whatever :func:`log_context` bound
(request id, tenant, event ids) — and redacts secrets last, after tracebacks are rendered:

* values under a sensitive key (``admin_key``, ``api_key``, ``password``, ``secret``,
  ``authorization``, ``dsn``, ...) become ``[redacted]``;
* credentials in URLs (``scheme://user:password@host``) and ``password=...`` in libpq DSNs
  lose their password;
* any string passed in ``secrets`` (the admin key) is cut out wherever it appears.

    configure_logging(secrets=[settings.admin_key.get_secret_value()])
    log = get_logger(__name__)
    with log_context(event):                  # tenant, event_id, event_type, request_id
        log.info("reserved", tokens=120)
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import IO, Any

import structlog
from opentelemetry import trace

from events import Event
from quotaflow.observability.config import LogFormat, ObservabilitySettings

REDACTED = "[redacted]"
SENSITIVE_KEY = re.compile(
    r"(?i)(admin[_-]?key|api[_-]?key|password|passwd|secret|authorization|credential|"
    r"private[_-]?key|cookie|dsn)"
)
URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^:/@\s]+):([^@/\s]+)@")
KEYWORD_PASSWORD = re.compile(r"(?i)\b(password|passwd|pwd)=(?:'[^']*'|\S+)")
NOISY = ("rstream", "httpx", "httpcore", "urllib3")

EventDict = MutableMapping[str, Any]


class Redactor:
    """A structlog processor that keeps secrets out of log records."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # very short strings would blank out ordinary words
        self.secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            text = URL_CREDENTIALS.sub(r"\1:" + REDACTED + "@", value)
            text = KEYWORD_PASSWORD.sub(r"\1=" + REDACTED, text)
            for secret in self.secrets:
                text = text.replace(secret, REDACTED)
            return text
        if isinstance(value, dict):
            return {k: self._field(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub(v) for v in value]
        return value

    def _field(self, key: str, value: Any) -> Any:
        if SENSITIVE_KEY.search(key) and value not in (None, ""):
            return REDACTED
        return self.scrub(value)

    def __call__(self, _logger: Any, _method: str, event_dict: EventDict) -> EventDict:
        for key in list(event_dict):
            event_dict[key] = self._field(key, event_dict[key])
        return event_dict


def add_trace_context(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """The current span's trace and span ids, when there is a recording or remote span."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event_dict.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event_dict.setdefault("span_id", format(ctx.span_id, "016x"))
    return event_dict


def event_log_fields(event: Event) -> dict[str, str]:
    """The ids a log line about ``event`` carries; never its payload."""
    fields = {
        "tenant": event.tenant_id,
        "event_id": str(event.event_id),
        "event_type": str(getattr(event, "type", type(event).__name__)),
    }
    request_id = getattr(event, "request_id", None)
    if request_id is not None:
        fields["request_id"] = str(request_id)
    if event.correlation_id is not None:
        fields["correlation_id"] = str(event.correlation_id)
    if event.causation_id is not None:
        fields["causation_id"] = str(event.causation_id)
    return fields


@contextmanager
def log_context(event: Event | None = None, **values: Any) -> Iterator[None]:
    """Bind an event's ids (and any ``values``, e.g. ``request_id=``) to every log line
    written inside the block, by this task."""
    fields: dict[str, Any] = event_log_fields(event) if event is not None else {}
    fields.update(values)
    with structlog.contextvars.bound_contextvars(**fields):
        yield


def get_logger(name: str | None = None) -> Any:
    """A structlog logger (``log.info("what", key=value)``)."""
    return structlog.stdlib.get_logger(name)


def configure_logging(
    level: str | None = None,
    fmt: LogFormat | None = None,
    *,
    secrets: Iterable[str] = (),
    stream: IO[str] | None = None,
) -> None:
    """Make every log record of the process a redacted JSON line (or a console line).

    Level and format default to ``QUOTAFLOW_LOG_LEVEL`` and ``QUOTAFLOW_LOG_FORMAT``.
    """
    config = ObservabilitySettings()
    level_name = (level or config.log_level).upper()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        add_trace_context,
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if (fmt or config.log_format) == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            Redactor(secrets),
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_name)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
