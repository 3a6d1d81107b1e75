"""Runs quotaflow's components as child processes and restarts the ones that die.

``quotaflow up`` uses it to run the whole system on one machine, and the chaos harness
(``quotaflow.chaos``) uses it to SIGKILL components at random and watch them come back. Each
child runs in a session of its own (a signal goes to its whole process group) and writes its
output to ``<log_dir>/<name>.log``. Children get SIGKILL from the kernel when the supervisor
dies (``quotaflow.procs.die_with_parent``); Triton's launcher stops its ``tritonserver`` (a
session of its own) on SIGTERM and passes the same parent-death signal on.

A child that exits while it should run is started again after a backoff that doubles from
0.5 s to 10 s and resets once the child has lived 30 s. ``hold`` keeps one stopped (as when
Triton is taken away for a while) until ``release``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from quotaflow.procs import die_with_parent

MIN_BACKOFF_S = 0.5
MAX_BACKOFF_S = 10.0
HEALTHY_AFTER_S = 30.0


@dataclass(frozen=True)
class Component:
    """One process to keep running: its name, command line and extra environment."""

    name: str
    argv: Sequence[str]
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class _Child:
    component: Component
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff_s: float = MIN_BACKOFF_S
    not_before: float = 0.0
    held: bool = False
    starts: int = 0


Notify = Callable[[str, str], None]


def _quiet(name: str, message: str) -> None:
    del name, message


class Supervisor:
    """Start, watch, restart, kill and stop a set of components (thread-safe)."""

    def __init__(
        self,
        components: Sequence[Component],
        *,
        log_dir: Path,
        cwd: Path | None = None,
        base_env: dict[str, str] | None = None,
        notify: Notify = _quiet,
    ) -> None:
        names = [c.name for c in components]
        if len(set(names)) != len(names):
            raise ValueError(f"component names repeat: {names}")
        self._children = {c.name: _Child(c) for c in components}
        self._log_dir = log_dir
        self._cwd = cwd
        self._base_env = dict(os.environ if base_env is None else base_env)
        self._notify = notify
        self._lock = threading.RLock()
        self._stopping = False

    @property
    def names(self) -> list[str]:
        return list(self._children)

    def log_path(self, name: str) -> Path:
        return self._log_dir / f"{name}.log"

    def start(self) -> None:
        """Start every component that is not held."""
        self._log_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            for child in self._children.values():
                if not child.held and not self._alive(child):
                    self._spawn(child)

    def poll(self) -> None:
        """Restart what died (after its backoff); call it every fraction of a second."""
        now = time.monotonic()
        with self._lock:
            if self._stopping:
                return
            for name, child in self._children.items():
                proc = child.process
                if child.held or proc is None:
                    continue
                code = proc.poll()
                if code is None:
                    if now - child.started_at > HEALTHY_AFTER_S:
                        child.backoff_s = MIN_BACKOFF_S
                    continue
                if child.not_before == 0.0:
                    child.not_before = now + child.backoff_s
                    self._notify(
                        name,
                        f"exited with {_describe(code)}; restarting in {child.backoff_s:.1f} s",
                    )
                    child.backoff_s = min(child.backoff_s * 2, MAX_BACKOFF_S)
                elif now >= child.not_before:
                    self._spawn(child)

    def pid(self, name: str) -> int | None:
        with self._lock:
            child = self._children[name]
            return child.process.pid if self._alive(child) and child.process else None

    def starts(self, name: str) -> int:
        """How many times the component was started (1 + its restarts)."""
        return self._children[name].starts

    def alive(self, name: str) -> bool:
        with self._lock:
            return self._alive(self._children[name])

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> bool:
        """Send ``sig`` to the component's process group; False if it was not running."""
        with self._lock:
            child = self._children[name]
            if not self._alive(child) or child.process is None:
                return False
            _signal_group(child.process, sig)
            return True

    def hold(self, name: str, timeout_s: float = 30.0) -> None:
        """Stop the component (SIGTERM, then SIGKILL) and keep it stopped."""
        with self._lock:
            child = self._children[name]
            child.held = True
        self._terminate(child, timeout_s)

    def release(self, name: str) -> None:
        """Start a held component again."""
        with self._lock:
            child = self._children[name]
            child.held = False
            child.backoff_s = MIN_BACKOFF_S
            if not self._alive(child):
                self._spawn(child)

    def stop(self, timeout_s: float = 30.0) -> dict[str, int | None]:
        """SIGTERM everything, wait up to ``timeout_s``, SIGKILL the rest; exit codes."""
        with self._lock:
            self._stopping = True
            running = [c for c in self._children.values() if self._alive(c)]
        for child in running:
            if child.process is not None:
                _signal_group(child.process, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._notify(child.component.name, "did not stop in time; SIGKILL")
                _signal_group(child.process, signal.SIGKILL)
                child.process.wait(10)
        return {
            name: (c.process.returncode if c.process is not None else None)
            for name, c in self._children.items()
        }

    def _alive(self, child: _Child) -> bool:
        return child.process is not None and child.process.poll() is None

    def _spawn(self, child: _Child) -> None:
        if self._stopping:
            return
        c = child.component
        env = {**self._base_env, **c.env}
        with self.log_path(c.name).open("ab") as out:
            child.process = subprocess.Popen(
                list(c.argv),
                cwd=self._cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                # the parent-death signal follows the spawning thread: only from the main one
                preexec_fn=die_with_parent
                if threading.current_thread() is threading.main_thread()
                else None,
            )
        child.started_at = time.monotonic()
        child.not_before = 0.0
        child.starts += 1
        verb = "started" if child.starts == 1 else "restarted"
        self._notify(c.name, f"{verb} (pid {child.process.pid})")

    def _terminate(self, child: _Child, timeout_s: float) -> None:
        proc = child.process
        if proc is None or proc.poll() is not None:
            return
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(10)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def exit_status(code: int | None) -> str:
    """How a stopped child ended, in words (uvicorn re-raises SIGTERM after a clean shutdown)."""
    if code is None:
        return "never started"
    if code == 0 or code == -signal.SIGTERM:
        return "stopped cleanly" if code == 0 else "stopped (SIGTERM)"
    return _describe(code)


def _describe(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-code).name
    return f"code {code}"
