"""``python -m projections.billing [--schema billing] [--dsn …] [--reset]``: migrate the view."""

from projections.billing.migrate import main

main()
