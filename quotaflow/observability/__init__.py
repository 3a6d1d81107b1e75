"""Metrics, structured logs and traces of quotaflow processes.

Import from the module you need; this package imports nothing by itself, so the metrics
server costs an agent process no structlog or OpenTelemetry import.

* :mod:`~quotaflow.observability.server`: ``/metrics``, ``/healthz``, ``/readyz`` of an agent
* :mod:`~quotaflow.observability.tokens`: tokens reserved / settled / released per tenant,
  requests decided, decision latency
* :mod:`~quotaflow.observability.triton_calls`: Triton call latency per model and outcome
* :mod:`~quotaflow.observability.logconfig`: structlog JSON logs with request, tenant and
  event ids; secrets redacted
* :mod:`~quotaflow.observability.tracing`: OpenTelemetry spans; the trace context travels in
  event ``headers``
* :mod:`~quotaflow.observability.config`: the ``QUOTAFLOW_METRICS_*``, ``_LOG_*`` and
  ``_OTEL_*`` settings
"""
