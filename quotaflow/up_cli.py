"""``quotaflow up``: run every component locally until Ctrl-C."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from quotaflow.settings import Settings
from quotaflow.supervisor import Supervisor, exit_status
from quotaflow.up import (
    AGENT_PROCESSES,
    INGRESS,
    ROOT,
    api_url,
    components,
    triton_component,
    triton_reachable,
    wait_http_ok,
)

up_cli = typer.Typer(add_completion=False)


@up_cli.command()
def up(
    triton: Annotated[
        bool, typer.Option(help="start Triton when nothing answers on QUOTAFLOW_TRITON_URL")
    ] = True,
    model_repository: Annotated[Path, typer.Option(help="Triton's model repository")] = ROOT
    / "triton_models",
    log_dir: Annotated[Path, typer.Option(help="each process writes <name>.log here")] = Path(
        "var/up"
    ),
    metrics_port_base: Annotated[
        int, typer.Option(help="agent process i serves /metrics on base+i; 0: off")
    ] = 9100,
    ready_timeout: Annotated[float, typer.Option(help="seconds to wait for readiness")] = 300.0,
) -> None:
    """Run the ingress, every agent and (if needed) Triton as supervised processes.

    A process that dies is restarted. Ctrl-C (or SIGTERM) stops them all, each draining its
    in-flight work.
    """
    console = Console()
    settings = Settings()
    start_triton = triton and not triton_reachable(settings.triton_url)
    comps = components(
        triton=triton_component(settings, model_repository) if start_triton else None,
        metrics_port_base=metrics_port_base,
    )

    def notify(name: str, message: str) -> None:
        console.print(f"[dim]{name}[/]: {message}")

    sup = Supervisor(comps, log_dir=log_dir, cwd=ROOT, notify=notify)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    sup.start()
    try:
        url = api_url(settings)
        with console.status("waiting for the API, the agents and Triton…"):
            triton_url = settings.triton_url if triton else None  # --no-triton: don't wait
            ready = _wait_ready(sup, url, triton_url, ready_timeout, stop)
        if stop.is_set():
            return
        if not ready:
            console.print(f"[red]not ready after {ready_timeout:.0f} s[/]; see {log_dir}/*.log")
        _print_table(console, sup, log_dir, url, metrics_port_base)
        console.print("running; Ctrl-C stops every process")
        while not stop.wait(0.5):
            sup.poll()
    finally:
        console.print("stopping…")
        codes = sup.stop()
        console.print(", ".join(f"{n}: {exit_status(c)}" for n, c in codes.items()))


def _wait_ready(
    sup: Supervisor, url: str, triton_url: str | None, timeout_s: float, stop: threading.Event
) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stop.is_set():
        sup.poll()
        triton_ok = triton_url is None or triton_reachable(triton_url)
        if triton_ok and wait_http_ok(f"{url}/readyz", 1.0):
            return True
        stop.wait(0.5)
    return False


def _print_table(
    console: Console, sup: Supervisor, log_dir: Path, url: str, metrics_port_base: int
) -> None:
    table = Table(title="quotaflow up")
    for col in ("process", "pid", "serves", "log"):
        table.add_column(col)
    agent_names = list(AGENT_PROCESSES)
    for name in sup.names:
        if name == INGRESS:
            serves = f"{url}  (docs: {url}/docs)"
        elif name in AGENT_PROCESSES:
            agents = ", ".join(AGENT_PROCESSES[name])
            port = metrics_port_base + agent_names.index(name) if metrics_port_base else 0
            serves = f"{agents}" + (f"; metrics :{port}" if port else "")
        else:
            serves = "Triton (gRPC/HTTP/metrics)"
        table.add_row(name, str(sup.pid(name) or "—"), serves, str(sup.log_path(name)))
    console.print(table)
