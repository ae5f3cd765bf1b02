"""`dockyard volumes ...`: your disks of your own (docs/volumes.md)."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from dockyard.cli import render
from dockyard.cli.client import Client, CliError

volumes_app = typer.Typer(help="Volumes: disks of your own, kept apart from instances.", no_args_is_help=True)
JsonOpt = typer.Option(False, "--json", help="print JSON")


def _used(volume: dict) -> str:
    used = volume.get("used_bytes")
    return "-" if used is None else f"{used / 2**30:.2f} GB"


def _line(volume: dict) -> None:
    render.console.print(f"{volume['id']}  {volume['name']}  {volume['size_gb']} GB  {volume['status']}", highlight=False)


@volumes_app.command("ls")
def list_(all_: bool = typer.Option(False, "--all", "-a", help="include deleted"), as_json: bool = JsonOpt) -> None:
    """Your volumes."""
    rows = Client().get("/volumes", params={"all": all_})
    if as_json:
        return render.print_json(rows)
    render.table(None, ["ID", "NAME", "SIZE", "NODE", "STATUS", "MOUNTED BY", "CREATED"], [
        [v["id"], v["name"], f"{v['size_gb']} GB", v["node"], v["status"],
         f"{v['instance']} at {v['mount_path']}" if v["instance"] else "-", render.when(v["created_at"])]
        for v in rows
    ])


@volumes_app.command("create")
def create(name: str = typer.Argument(...), size: int = typer.Option(..., "--size", "-s", help="size in GB"),
           node: Optional[str] = typer.Option(None, "--node", help="default: the local node"),
           as_json: bool = JsonOpt) -> None:
    """Make a volume: mount it with `dockyard create --volume NAME[:/path]`."""
    volume = Client().post("/volumes", {"name": name, "size_gb": size, "node": node})
    render.print_json(volume) if as_json else _line(volume)


@volumes_app.command("show")
def show(key: str = typer.Argument(..., metavar="NAME"), as_json: bool = JsonOpt) -> None:
    """One volume, with the space its files take."""
    v = Client().get(f"/volumes/{key}")
    if as_json:
        return render.print_json(v)
    for label, value in (("id", v["id"]), ("name", v["name"]), ("owner", v["owner"]), ("node", v["node"]),
                         ("size", f"{v['size_gb']} GB"), ("used", _used(v)),
                         ("status", v["status"] + (f" ({v['status_reason']})" if v["status_reason"] else "")),
                         ("mounted", f"by {v['instance']} at {v['mount_path']}" if v["instance"] else "-"),
                         ("kept from", v["source_instance"] or "-"), ("created", render.when(v["created_at"]))):
        render.console.print(f"[bold]{label:>9}[/bold]  {value}", highlight=False)


@volumes_app.command("resize")
def resize(key: str = typer.Argument(..., metavar="NAME"), size: int = typer.Argument(..., metavar="GB"),
           as_json: bool = JsonOpt) -> None:
    """Grow a volume (or shrink it, above the data in it); its instance must be stopped."""
    volume = Client().post(f"/volumes/{key}/resize", {"size_gb": size})
    render.print_json(volume) if as_json else _line(volume)


@volumes_app.command("rm")
def rm(key: str = typer.Argument(..., metavar="NAME"), yes: bool = typer.Option(False, "--yes", "-y"),
       as_json: bool = JsonOpt) -> None:
    """Delete a volume and every file on it."""
    client = Client()
    volume = client.get(f"/volumes/{key}")
    if not yes:
        if not sys.stdin.isatty():
            raise CliError("removing a volume deletes its files; pass --yes to confirm")
        typer.confirm(f"Delete volume {volume['name']} and every file on it?", abort=True)
    removed = client.delete(f"/volumes/{volume['id']}")
    render.print_json(removed) if as_json else _line(removed)
