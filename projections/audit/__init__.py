"""Replay and audit: rebuild any view from the log, and prove the views equal the events.

* :mod:`~projections.audit.rebuild` — rebuild a view into a scratch target and swap it in
  (billing here, the Redis quota view in :mod:`projections.quota_rebuild`);
* :mod:`~projections.audit.run` — :func:`audit`: read the log once, recompute every tenant's
  usage, reservations and invoices with plain Python (:mod:`~projections.audit.facts`,
  :mod:`~projections.audit.expected`), re-execute every quota decision
  (:mod:`~projections.audit.decisions`), check the log's invariants
  (:mod:`~projections.audit.invariants`) and compare the live views
  (:mod:`~projections.audit.billing_view`, :mod:`~projections.audit.redis_view`);
* :mod:`~projections.audit.report` — the JSON and HTML reports.
"""

from projections.audit.model import Discrepancy, EventRef, Findings
from projections.audit.run import AuditOptions, Auditor, AuditResult, audit

__all__ = ["AuditOptions", "AuditResult", "Auditor", "Discrepancy", "EventRef", "Findings", "audit"]
