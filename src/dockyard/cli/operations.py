"""Following a long operation of the server (a clone's or a migration's disk copies) with a progress bar."""

from __future__ import annotations

import time

from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn

from dockyard.cli import render
from dockyard.cli.client import Client, CliError


def follow(client: Client, op: dict, show: bool = True) -> dict:
    """Show `op` until it ends (polling GET /operations/ID); its last view. A failed one
    raises CliError with the server's reason. `show` False: no bar (--json output)."""
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                  TimeElapsedColumn(), console=render.console, disable=not show) as progress:
        task = progress.add_task("", total=None)
        while True:
            progress.update(task, description=escape(f"{op['kind']} {op['target']}: {op['phase']}"),
                            total=100 if op["percent"] is not None else None, completed=op["percent"] or 0)
            if op["done"]:
                break
            time.sleep(0.5)
            op = client.get(f"/operations/{op['id']}")
    if op["error"]:
        raise CliError(op["error"])
    return op
