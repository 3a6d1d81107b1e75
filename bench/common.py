"""Helpers shared by the benchmarks: sample events, timing, the final JSON line."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from events import InferenceRequested, encode
from events.model import RequestSpec

PROMPTS = [
    "Summarise the following support ticket in two sentences: the customer reports that "
    "invoices for March show duplicated line items after the plan upgrade.",
    "Translate to French: The quarterly report is due on Friday.",
    "Write a haiku about stream processing.",
    "Classify the sentiment of: 'the latency went down by half after the upgrade, great work'.",
]


def sample_events(count: int, tenants: int = 50) -> list[bytes]:
    """Realistic InferenceRequested records (~600 bytes each)."""
    out = []
    for i in range(count):
        prompt = PROMPTS[i % len(PROMPTS)]
        event = InferenceRequested(
            tenant_id=f"tenant-{i % tenants}",
            request_id=uuid.uuid4(),
            spec=RequestSpec(model="echo", prompt=prompt, max_tokens=64 + i % 64),
            estimated_prompt_tokens=len(prompt) // 4,
            idempotency_key=f"key-{i}",
        )
        out.append(encode(event))
    return out


@dataclass
class Timer:
    seconds: float = 0.0
    count: int = 0

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


@contextmanager
def timed(count: int) -> Iterator[Timer]:
    timer = Timer(count=count)
    start = time.perf_counter()
    yield timer
    timer.seconds = time.perf_counter() - start


@dataclass
class Report:
    name: str
    figures: dict[str, Any] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.figures[key] = round(value, 3) if isinstance(value, float) else value

    def line(self, text: str) -> None:
        print(f"[{self.name}] {text}", file=sys.stderr, flush=True)

    def emit(self) -> None:
        print(json.dumps({"bench": self.name, **self.figures}), flush=True)
