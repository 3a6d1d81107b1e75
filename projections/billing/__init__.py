"""The billing view: the event log folded into PostgreSQL.

* :mod:`~projections.billing.migrate` — the schema (``infra/sql``), :func:`migrate`,
  :func:`reset` and :func:`promote` (swap in a schema rebuilt by a replay); also
  ``python -m projections.billing [--schema S] [--reset]``;
* :mod:`~projections.billing.rows` — pure: events → rows;
* :mod:`~projections.billing.projection` — :func:`apply` a batch exactly once, :func:`positions`;
* :mod:`~projections.billing.queries` — usage, invoices, request records, audit totals;
* :mod:`~projections.billing.db` — a connection or a pool, wherever one is taken.

Pricing is done at read time (the ``invoice_lines`` view joins the usage ledger with the price
history), so a price is right whether its PriceSet is applied before or after the settlements
it governs.
"""

from projections.billing.migrate import DEFAULT_SCHEMA, MigrationError, migrate, promote, reset
from projections.billing.projection import apply, positions
from projections.billing.queries import (
    Invoice,
    InvoiceLine,
    RequestRecord,
    TenantTotals,
    Usage,
    UsageRow,
    invoice,
    request,
    totals,
    usage,
)

__all__ = [
    "DEFAULT_SCHEMA",
    "Invoice",
    "InvoiceLine",
    "MigrationError",
    "RequestRecord",
    "TenantTotals",
    "Usage",
    "UsageRow",
    "apply",
    "invoice",
    "migrate",
    "positions",
    "promote",
    "request",
    "reset",
    "totals",
    "usage",
]
