"""Resident memory of processes over time, and whether it stays flat.

:func:`tree_rss_mib` is a process's RSS plus its descendants' (tritonserver runs its Python
models in stub processes), from psutil when it is installed, else Linux ``/proc``.
:func:`flatness` judges a series after its warm-up; :func:`plot` draws the series when
matplotlib is installed.
"""

from __future__ import annotations

import contextlib
import importlib
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


psutil = _optional("psutil")


def _proc_rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:  # gone meanwhile
        pass
    return 0


def _proc_descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def tree_rss_mib(pid: int) -> float:
    """RSS of ``pid`` and all its descendants, MiB (0 if it is gone)."""
    if psutil is not None:
        try:
            proc = psutil.Process(pid)
            procs = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += int(p.memory_info().rss)
        return total / MIB
    return sum(_proc_rss_bytes(p) for p in [pid, *_proc_descendants(pid)]) / MIB


@dataclass(frozen=True)
class Flatness:
    start_mib: float  # median of the first samples after the warm-up
    end_mib: float  # median of the last samples
    max_mib: float
    slope_mib_per_min: float  # least squares over the samples after the warm-up
    max_growth_ratio: float
    max_growth_mib: float

    @property
    def growth_mib(self) -> float:
        return self.end_mib - self.start_mib

    @property
    def ratio(self) -> float:
        return self.end_mib / self.start_mib if self.start_mib else float("nan")

    @property
    def flat(self) -> bool:
        """Grew less than ``max_growth_ratio`` or less than ``max_growth_mib``."""
        return self.growth_mib < self.max_growth_mib or self.ratio < 1 + self.max_growth_ratio


def flatness(
    series: list[tuple[float, float]],
    warmup_s: float,
    *,
    edge: int = 3,
    max_growth_ratio: float = 0.10,
    max_growth_mib: float = 20.0,
) -> Flatness:
    """``series``: (seconds since the start, MiB). The samples before ``warmup_s`` are left
    out (imports, caches and pools filling up) unless that leaves fewer than two."""
    after = [(t, v) for t, v in series if t >= warmup_s]
    if len(after) < 2:
        after = series[-2:]
    if not after:
        raise ValueError("no samples")
    values = [v for _, v in after]
    slope = 0.0
    if len(after) >= 2 and after[-1][0] > after[0][0]:
        ts = [t for t, _ in after]
        slope = statistics.linear_regression(ts, values).slope * 60
    return Flatness(
        start_mib=statistics.median(values[:edge]),
        end_mib=statistics.median(values[-edge:]),
        max_mib=max(v for _, v in series),
        slope_mib_per_min=slope,
        max_growth_ratio=max_growth_ratio,
        max_growth_mib=max_growth_mib,
    )


def plot(
    series: dict[str, list[tuple[float, float]]], warmup_s: float, path: Path, title: str
) -> bool:
    """A PNG of every series; False when matplotlib is not installed."""
    if _optional("matplotlib") is None:
        return False
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    pyplot = importlib.import_module("matplotlib.pyplot")
    fig, ax = pyplot.subplots(figsize=(9, 4.5))
    for name, points in series.items():
        ax.plot([t / 60 for t, _ in points], [v for _, v in points], label=name)
    ax.axvline(warmup_s / 60, color="grey", linestyle=":", label="end of warm-up")
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS (MiB)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot.close(fig)
    return True
