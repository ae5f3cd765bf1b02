"""`dockyard metrics ID`: an instance's latest monitoring sample and the advisor's findings."""

from __future__ import annotations

from datetime import datetime, timezone

import typer
from rich.markup import escape

from dockyard.cli import render
from dockyard.cli.client import Client, path_key

SEVERITY_STYLE = {"critical": "red", "warning": "yellow", "info": "cyan"}


def _size(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**30:.1f} GiB"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def metrics(key: str = typer.Argument(..., metavar="ID", callback=path_key),
            as_json: bool = typer.Option(False, "--json", help="print JSON: the whole last hour")) -> None:
    """Latest CPU, memory, GPU and data disk use of an instance, and the advisor's findings."""
    view = Client().get(f"/instances/{key}/metrics")
    if as_json:
        return render.print_json(view)
    latest = view["samples"][-1] if view["samples"] else None
    rows = [("status", render.status(view["status"]))]
    if latest is None:
        rows.append(("samples", "none yet (taken while it runs)"))
    else:
        rows += [("sampled", render.when(datetime.fromtimestamp(latest["at"], timezone.utc).isoformat())), ("cpu", f"{_percent(latest['cpu_percent'])} of its share"),
                 ("memory", f"{_size(latest['memory_used'])} of {_size(latest['memory_limit'])}")]
    readings = {g["uuid"]: g for g in (latest or {}).get("gpus", [])}
    for gpu in view["gpus"]:
        reading = readings.get(gpu["uuid"]) or {}
        if reading.get("util_percent") is None:
            text = "simulated, no data" if gpu["simulated"] else "no data"
        else:
            text = f"{_percent(reading['util_percent'])} busy, {_size(reading['memory_used'])} of " \
                   f"{_size(reading['memory_total'])}"
        rows.append((f"gpu {gpu['index']}", f"{gpu['model']}: {text}"))
    disk = view["disk"]
    rows.append(("data disk", f"{_size(disk['used'])} of {_size(disk['total'])}" if disk else "not measured yet"))
    system = view.get("system_disk")
    if system:  # what it wrote over its image, against the operator's limit (0: none)
        limit = f" of {_size(system['total'])}" if system["total"] else ""
        rows.append(("system disk", f"{_size(system['used'])} written{limit}"))
    for name, value in rows:
        render.console.print(f"[bold]{name:>11}[/bold]  {value}", highlight=False)
    for finding in view["findings"]:
        style = SEVERITY_STYLE.get(finding["severity"], "bold")
        render.console.print(f"[{style}]{finding['severity']}[/{style}]: {escape(finding['message'])}\n"
                             f"{'':>11}  -> {escape(finding['action'])}", highlight=False)
