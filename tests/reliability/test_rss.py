"""The soak's memory sampling (bench/rss.py): process trees and the flatness verdict."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench.rss import _proc_descendants, _proc_rss_bytes, flatness, tree_rss_mib


def test_flat_and_growing_series() -> None:
    warm = [(float(t), 100.0 + t) for t in range(0, 60, 5)]  # grows while warming up
    steady = [(float(t), 160.0 + (t % 10) / 10) for t in range(60, 600, 5)]
    v = flatness(warm + steady, warmup_s=60)
    assert v.flat
    assert v.start_mib == pytest.approx(160.0, abs=1)
    assert abs(v.slope_mib_per_min) < 0.1
    assert v.max_mib == pytest.approx(160.5)

    leak = [(float(t), 200.0 + t / 10) for t in range(0, 600, 5)]  # 6 MiB a minute
    v = flatness(leak, warmup_s=60)
    assert not v.flat
    assert v.growth_mib == pytest.approx(53, abs=1)
    assert v.ratio == pytest.approx(1.26, abs=0.01)
    assert v.slope_mib_per_min == pytest.approx(6.0)

    # either bound makes it flat: +15 MiB on 50 MiB (30 %), +40 MiB on 1 GiB (4 %)
    assert flatness([(0, 50), (10, 50), (20, 65), (30, 65)], warmup_s=0, edge=2).flat
    assert flatness([(0, 1024), (10, 1024), (20, 1064), (30, 1064)], warmup_s=0, edge=2).flat
    assert not flatness([(0, 100), (10, 100), (20, 125), (30, 125)], warmup_s=0, edge=2).flat


def test_a_tree_counts_its_children() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in _proc_descendants(os.getpid())
        alone = _proc_rss_bytes(os.getpid()) / 1024**2
        both = tree_rss_mib(os.getpid())
        assert alone > 5
        assert both >= alone + _proc_rss_bytes(child.pid) / 1024**2 * 0.9
    finally:
        child.kill()
        child.wait()
    assert tree_rss_mib(child.pid) == 0.0
