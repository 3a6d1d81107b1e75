"""The short chaos run (``just chaos`` is the long one): HTTP load while every process is
SIGKILLed once, RabbitMQ and PostgreSQL restart, Triton stops for a while and Redis is flushed;
then nothing may be lost or counted twice, every client gets an answer, and the audit passes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.triton_server import needs_pytriton

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.services


def test_a_short_chaos_run_loses_nothing_and_counts_nothing_twice() -> None:
    needs_pytriton()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "quotaflow.chaos",
            "--requests",
            "3000",
            "--rate",
            "100",
            "--extra-kills",
            "0",
            "--down-s",
            "5",
            "--drain-timeout",
            "300",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-3000:]
    summary = json.loads(lines[-1])
    report = f"{summary}\n{done.stderr[-3000:]}"
    assert summary["lost"] == 0, report
    assert summary["double_counted_tokens"] == 0, report
    assert summary["billed_below_log_tokens"] == 0, report
    assert summary["decided_twice"] == summary["closed_twice"] == 0, report
    assert summary["audit"] == "pass", report
    assert summary["unanswered"] == summary["refused"] == 0, report
    # every kind of fault happened, and the load saw both answers
    assert {"rabbitmq-restart", "postgres-restart", "redis-flush", "triton-down"} <= set(
        summary["fault_kinds"]
    ), report
    assert sum(k.startswith("kill:") for k in summary["fault_kinds"]) == 6, report
    assert summary["settled"] > 0, report
    assert summary["rejected"] > 0, report
    assert done.returncode == 0, report
