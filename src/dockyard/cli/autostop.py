"""Auto-stop and notifications: `dockyard autostop ID [--idle 30m|off] [--after 8h|off]
[--gpu-idle 30m|off] [--gpu-under 5] [--stop-at TIME|off] [--stop-on-exit/--no-stop-on-exit]
[--stop-when-exits NAME|off]`, `dockyard keep ID`, `dockyard notifications [--unread] [--read]
[--json]`; `create` takes the same rules (but a process: it has none yet)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

import typer

from dockyard.cli import render
from dockyard.cli.client import CliError, Client, parse_minutes
from dockyard.core import autostop as rules
from dockyard.core.errors import InvalidInput

JsonOpt = typer.Option(False, "--json", help="print JSON")
DURATIONS = "minutes (30, 30m), hours (2h, 1h30m) or off"
IDLE_HELP = f"stop after this long without SSH or Jupyter activity: {DURATIONS}"
AFTER_HELP = f"stop after running this long since its start or keep-running: {DURATIONS}"
GPU_IDLE_HELP = f"stop after every GPU stayed under --gpu-under % this long: {DURATIONS}"
GPU_UNDER_HELP = "the GPU-idle threshold in % busy, 0-100 (default 5)"
STOP_AT_HELP = "stop at this time, with its zone (2026-12-02T08:00+08:00), or off"
ON_EXIT_HELP = "stop (keeping the disks) when the start command exits"
WHEN_EXITS_HELP = "stop when this running process exits (its name or script, e.g. train.py), or off"
POLICY_FIELDS = ("auto_stop_idle_minutes", "auto_stop_max_minutes", "auto_stop_gpu_idle_minutes",
                 "auto_stop_gpu_idle_percent", "auto_stop_at", "auto_stop_on_exit", "auto_stop_when_exits")


def policy_body(idle: Optional[str], after: Optional[str], options: tuple[str, str] = ("--idle", "--after"),
                gpu_idle: Optional[str] = None, gpu_under: Optional[int] = None, stop_at: Optional[str] = None,
                on_exit: Optional[bool] = None) -> dict:
    """The policy fields for the options given (an option left out is not sent)."""
    body = {field: parse_minutes(value, option) for field, value, option in zip(
        POLICY_FIELDS, (idle, after, gpu_idle), (*options, "--gpu-idle")) if value is not None}
    if gpu_under is not None:
        if not 0 <= gpu_under <= 100:
            raise CliError(f"--gpu-under: {gpu_under} is outside 0-100 %")
        body["auto_stop_gpu_idle_percent"] = gpu_under
    if stop_at is not None:
        body["auto_stop_at"] = None if stop_at.strip().lower() == rules.OFF else _time(stop_at)
    if on_exit is not None:
        body["auto_stop_on_exit"] = on_exit
    return body


def _time(text: str) -> str:
    try:
        return rules.parse_time(text, "--stop-at", datetime.now(timezone.utc)).isoformat()
    except InvalidInput as exc:
        raise CliError(exc.message) from None


def autostop(key: str = typer.Argument(..., metavar="ID"),
             idle: Optional[str] = typer.Option(None, "--idle", help=IDLE_HELP),
             after: Optional[str] = typer.Option(None, "--after", help=AFTER_HELP),
             gpu_idle: Optional[str] = typer.Option(None, "--gpu-idle", help=GPU_IDLE_HELP),
             gpu_under: Optional[int] = typer.Option(None, "--gpu-under", help=GPU_UNDER_HELP),
             stop_at: Optional[str] = typer.Option(None, "--stop-at", help=STOP_AT_HELP),
             on_exit: Optional[bool] = typer.Option(None, "--stop-on-exit/--no-stop-on-exit", help=ON_EXIT_HELP),
             when_exits: Optional[str] = typer.Option(None, "--stop-when-exits", help=WHEN_EXITS_HELP),
             as_json: bool = JsonOpt) -> None:
    """Show or change an instance's auto-stop policy (stopping keeps both disks)."""
    client = Client()
    body = policy_body(idle, after, gpu_idle=gpu_idle, gpu_under=gpu_under, stop_at=stop_at, on_exit=on_exit)
    if when_exits is not None:
        body["auto_stop_when_exits"] = None if when_exits.strip().lower() == rules.OFF else when_exits
    data = client.patch(f"/instances/{key}", body) if body else client.get(f"/instances/{key}")
    _show(data, as_json)


def keep(key: str = typer.Argument(..., metavar="ID"), as_json: bool = JsonOpt) -> None:
    """Keep running: call off a warned auto-stop; its timers count from now."""
    _show(Client().post(f"/instances/{key}/keep"), as_json)


def _show(data: dict, as_json: bool) -> None:
    if as_json:
        return render.print_json({k: data[k] for k in ("id", "name", *POLICY_FIELDS, "auto_stop_pending",
                                                         "auto_stop_notes")})
    render.console.print(f"{data['id']}  {data['name']}  auto-stop: {render.policy(data)}", highlight=False)
    if data.get("auto_stop_pending"):
        render.console.print(data["auto_stop_pending"], highlight=False)


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
