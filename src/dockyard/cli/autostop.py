"""Auto-stop and notifications (issue 7): `dockyard autostop ID [--idle 30m|off] [--after 8h|off]`,
`dockyard notifications [--unread] [--read] [--json]`; `create` takes the same durations."""

from __future__ import annotations

from typing import Optional

import typer

from dockyard.cli import render
from dockyard.cli.client import Client, parse_minutes, path_key

JsonOpt = typer.Option(False, "--json", help="print JSON")
DURATIONS = "minutes (30, 30m), hours (2h, 1h30m) or off"
IDLE_HELP = f"stop after this long without SSH or Jupyter activity: {DURATIONS}"
AFTER_HELP = f"stop after running this long since its start: {DURATIONS}"
POLICY_FIELDS = ("auto_stop_idle_minutes", "auto_stop_max_minutes")


def policy_body(idle: Optional[str], after: Optional[str], options: tuple[str, str] = ("--idle", "--after")) -> dict:
    """The policy fields for the options given (an option left out is not sent)."""
    return {field: parse_minutes(value, option)
            for field, value, option in zip(POLICY_FIELDS, (idle, after), options) if value is not None}


def autostop(key: str = typer.Argument(..., metavar="ID", callback=path_key),
             idle: Optional[str] = typer.Option(None, "--idle", help=IDLE_HELP),
             after: Optional[str] = typer.Option(None, "--after", help=AFTER_HELP),
             as_json: bool = JsonOpt) -> None:
    """Show or change an instance's auto-stop policy (stopping keeps both disks)."""
    client = Client()
    body = policy_body(idle, after)
    data = client.patch(f"/instances/{key}", body) if body else client.get(f"/instances/{key}")
    if as_json:
        return render.print_json({k: data[k] for k in ("id", "name", *POLICY_FIELDS)})
    render.console.print(f"{data['id']}  {data['name']}  auto-stop: {render.policy(data)}")


def notifications(unread: bool = typer.Option(False, "--unread", help="only unread ones"),
                  read: bool = typer.Option(False, "--read", help="then mark the listed ones read"),
                  as_json: bool = JsonOpt) -> None:
    """Your notifications, newest first: low balance, instances stopped (and why)."""
    client = Client()
    rows = client.get("/notifications", params={"unread": unread})
    unread_ids = [n["id"] for n in rows if not n["read"]]
    if read and unread_ids:
        client.post("/notifications/read", {"ids": unread_ids})
    if as_json:
        return render.print_json(rows)
    render.table(None, ["TIME", "KIND", "MESSAGE", ""],
                 [[render.when(n["at"]), n["kind"], n["message"], "" if n["read"] else "new"] for n in rows])
