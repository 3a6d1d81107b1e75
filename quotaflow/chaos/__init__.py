"""The chaos harness (``just chaos``): sustained HTTP load while components are killed and the
servers restarted, then proof that nothing was lost or counted twice.

* :mod:`quotaflow.chaos.load`: the clients, with idempotency keys and retries.
* :mod:`quotaflow.chaos.faults`: the fault schedule and how each fault is caused.
* :mod:`quotaflow.chaos.ledger`: what the log says happened to every request.
* :mod:`quotaflow.chaos.run`: the whole run and its report (``python -m quotaflow.chaos``).
"""
