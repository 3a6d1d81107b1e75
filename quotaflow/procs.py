"""Child processes that do not outlive their parent."""

from __future__ import annotations

import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: signal.Signals = signal.SIGKILL) -> None:
    """For ``subprocess.Popen(preexec_fn=...)``: the kernel sends ``sig`` to the child when its
    parent dies, even by SIGKILL, so a killed supervisor leaves no orphans (Linux; elsewhere a
    no-op)."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
