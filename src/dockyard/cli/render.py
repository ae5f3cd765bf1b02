"""Tables and JSON for the terminal."""

from __future__ import annotations

import json
import sys
from datetime import datetime

from rich.console import Console
from rich.table import Table

from dockyard.core.autostop import summary

# Piped output is not wrapped at 80 columns: tables stay one line per row for grep.
console = Console(width=None if sys.stdout.isatty() else 200)
STATUS_STYLE = {"running": "green", "failed": "red", "lost": "red", "stopped": "yellow", "released": "dim",
                "queued": "cyan"}


def print_json(data) -> None:
    print(json.dumps(data, indent=2))


def table(title: str | None, columns: list[str], rows: list[list]) -> None:
    view = Table(title=title, header_style="bold")
    for column in columns:
        view.add_column(column)
    for row in rows:
        view.add_row(*("" if v is None else str(v) for v in row))
    console.print(view)


def status(value: str) -> str:
    style = STATUS_STYLE.get(value)
    return f"[{style}]{value}[/{style}]" if style else value


def instance_status(instance: dict) -> str:
    """The status, with the place in line while queued: 'queued #2'."""
    place = f" #{instance['queue_position']}" if instance.get("queue_position") else ""
    return status(instance["status"]) + place


def queue_text(instance: dict) -> str:
    until = f", gives up {when(instance['queue_deadline'])}" if instance.get("queue_deadline") else ""
    return (f"position {instance['queue_position']} for {instance['gpu_count']} x {instance['gpu_model']} "
            f"on {instance['node']}, since {when(instance['queued_at'])}{until}")


def when(value: str | None) -> str:
    if not value:
        return "-"
    return datetime.fromisoformat(value).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def gpus_text(instance: dict) -> str:
    if not instance["gpus"]:
        return "none (no-GPU mode)" if instance["no_gpu"] else "none"
    indexes = ",".join(str(g["index"]) for g in instance["gpus"])
    sim = " (simulated)" if instance["gpus"][0]["simulated"] else ""
    if instance.get("gpu_share"):
        return f"{instance['gpu_share']} of {instance['gpu_model']} [{indexes}]{sim}"
    return f"{len(instance['gpus'])} x {instance['gpu_model']} [{indexes}]{sim}"


def shares_text(row: dict) -> str:
    """A market row's shares: '0.5 (1), 0.25 (3)'; '-' where its GPUs rent whole only."""
    return ", ".join(f"{s['share']} ({s['free']})" for s in row.get("shares") or []) or "-"


def policy(instance: dict) -> str:
    """The auto-stop policy in words, and why a rule cannot fire."""
    at = instance.get("auto_stop_at")
    words = summary(instance["auto_stop_idle_minutes"], instance["auto_stop_max_minutes"],
                    instance.get("auto_stop_gpu_idle_minutes"), instance.get("auto_stop_gpu_idle_percent"),
                    datetime.fromisoformat(at) if at else None, bool(instance.get("auto_stop_on_exit")),
                    instance.get("auto_stop_when_exits"))
    notes = instance.get("auto_stop_notes") or []
    return words + "".join(f" (GPU idle {note})" for note in notes)


def instances(rows: list[dict]) -> None:
    table(
        None,
        ["ID", "NAME", "STATUS", "GPUS", "NODE", "IMAGE", "CREATED"],
        [[i["id"], i["name"], instance_status(i), gpus_text(i), i["node"], i["image"], when(i["created_at"])]
         for i in rows],
    )


def data_disk(data: dict) -> str:
    volume = next((v.rsplit(":", 1)[0] for v in data.get("volumes", []) if v.endswith(":/root/data")), None)
    return f"volume {volume} at /root/data" if volume else f"{data['data_disk_gb']} GB at /root/data"


def instance(data: dict, events: list[dict]) -> None:
    fields = [
        ("id", data["id"]), ("name", data["name"]), ("owner", data["owner"]),
        ("status", instance_status(data) + (f" ({data['status_reason']})" if data["status_reason"] else "")),
        *([("queue", queue_text(data))] if data.get("queue_position") else []),
        ("node", data["node"]), ("image", data["image"]), ("gpus", gpus_text(data)),
        ("data disk", data_disk(data)),
        ("volumes", ", ".join(v for v in data.get("volumes", []) if not v.endswith(":/root/data")) or "-"),
        ("release", ("keeps the data disk as a volume" if data.get("keep_data_on_release", True)
                     else "deletes the data disk") + f"; automatic after {data.get('auto_release_days') or 'the usual'}"
                    " days stopped"),
        ("command", data["command"] or "(image default: sleep)"),
        ("ssh", data.get("ssh_command") or "-"),
        ("auto-stop", policy(data)),
        ("env", ", ".join(data["env"]) or "-"),
        ("created", when(data["created_at"])), ("started", when(data["started_at"])),
    ]
    for key, value in fields:
        console.print(f"[bold]{key:>10}[/bold]  {value}")
    if data.get("env_check"):
        env_check(data["env_check"])
    if events:
        table("events", ["TIME", "FROM", "TO", "CAUSE"],
              [[when(e["at"]), e["from_status"] or "-", e["to_status"], e["cause"]] for e in events])


def env_check(result: dict | None) -> None:
    """The image's self-test, as `dockyard-check` reported it."""
    if not result:
        console.print("no environment check yet")
        return
    if result.get("error"):
        console.print(f"[bold]{'check':>10}[/bold]  [red]{result['error']}[/red]")
        return
    verdict = "[green]ok[/green]" if result.get("ok") else "[red]problem[/red]"
    gpus = f"{result.get('gpu_count', 0)} visible" + (", usable" if result.get("gpu_count") and result.get("gpus_usable") else "")
    if result.get("simulated"):
        gpus += " (simulated: assigned, no devices)"
    console.print(f"[bold]{'check':>10}[/bold]  {verdict}: python {result.get('python')}, "
                  f"{result.get('framework')} {result.get('framework_version')}, CUDA {result.get('cuda') or 'none'}, "
                  f"NCCL {result.get('nccl') or 'none'}, GPUs {gpus}")
    for path, usage in (result.get("disks") or {}).items():
        console.print(f"{'':>12}{path}: {usage['free_bytes'] / 2**30:.1f} GB free of {usage['total_bytes'] / 2**30:.1f} GB")
    for error in result.get("errors") or []:
        console.print(f"{'':>12}[red]{error}[/red]")
