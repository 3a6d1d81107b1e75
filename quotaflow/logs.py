"""Process-wide logging: one line per record on stderr."""

from __future__ import annotations

import logging
import os


def configure(level: str | None = None) -> None:
    logging.basicConfig(
        level=(level or os.environ.get("QUOTAFLOW_LOG_LEVEL", "INFO")).upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    for noisy in ("rstream", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
