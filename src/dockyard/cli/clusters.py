"""`dockyard cluster ...`: K instances for distributed training. A client of the API only."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from dockyard.cli import render
from dockyard.cli.client import CliError, Client, parse_env, path_key, wait_for
from dockyard.core.validation import DEFAULT_DATA_DISK_GB

clusters_app = typer.Typer(help="Clusters: several instances on one private network, for multi-node training.",
                           no_args_is_help=True)
JsonOpt = typer.Option(False, "--json", help="print JSON")


def _finish(client: Client, cluster: dict, wait: bool, targets: list[str], as_json: bool) -> None:
    if wait:
        with render.console.status(f"{cluster['name']}: {cluster['status']}..."):
            cluster = wait_for(client, "clusters", cluster["id"], [*targets, "failed", "degraded"])
    if as_json:
        return render.print_json(cluster)
    _members(cluster)
    if cluster["status"] in ("failed", "degraded"):
        raise typer.Exit(1)


def _members(cluster: dict) -> None:
    render.console.print(
        f"{cluster['id']}  {cluster['name']}  {render.status(cluster['status'])}  "
        f"{cluster['nodes']} x {cluster['gpus_per_node']} {cluster['gpu_model']}  network {cluster['network']} "
        f"{cluster['subnet'] or ''}  master {cluster['master_addr']}:{cluster['master_port']}", highlight=False)
    render.table(None, ["RANK", "NAME", "ID", "STATUS", "NODE", "ADDRESS", "GPUS"], [
        [m["rank"], m["name"], m["id"], render.status(m["status"]) + (f" ({m['status_reason']})" if m["status_reason"]
                                                                     else ""),
         m["node"], m["address"] or "-", ",".join(map(str, m["gpus"])) or "-"] for m in cluster["members"]])


@clusters_app.command()
def create(
    name: str = typer.Option(..., "--name", "-n", help="members are NAME-0, NAME-1, ... (also their hostnames)"),
    nodes: int = typer.Option(..., "--nodes", "-k", help="how many members (instances)"),
    gpus: int = typer.Option(1, "--gpus", "-g", help="GPUs per member"),
    gpu_model: str = typer.Option("any", "--gpu-model", "-m", help="one GPU model for all members, or 'any'"),
    image: str = typer.Option(..., "--image", "-i", help="image name (see `dockyard images`)"),
    env: list[str] = typer.Option([], "--env", "-e", help="NAME=VALUE, repeatable"),
    command: Optional[str] = typer.Option(None, "--cmd", help="every member's start command"),
    data_disk: int = typer.Option(DEFAULT_DATA_DISK_GB, "--data-disk", help="each member's data disk in GB"),
    wait: bool = typer.Option(False, "--wait", help="wait until every member is running"),
    as_json: bool = JsonOpt,
) -> None:
    """Place K instances at once (all or nothing), connected by a private network."""
    client = Client()
    body = {"name": name, "nodes": nodes, "gpus": gpus, "gpu_model": gpu_model, "image": image,
            "env": parse_env(env), "command": command, "data_disk_gb": data_disk}
    _finish(client, client.post("/clusters", body), wait, ["running"], as_json)


@clusters_app.command("ls")
def list_(all_: bool = typer.Option(False, "--all", "-a", help="include released"), as_json: bool = JsonOpt) -> None:
    """Your clusters."""
    rows = Client().get("/clusters", params={"all": all_})
    if as_json:
        return render.print_json(rows)
    render.table(None, ["ID", "NAME", "STATUS", "MEMBERS", "GPUS EACH", "NODES", "NETWORK", "CREATED"], [
        [c["id"], c["name"], render.status(c["status"]), c["nodes"], f"{c['gpus_per_node']} x {c['gpu_model']}",
         ",".join(c["spans"]), c["network"], render.when(c["created_at"])] for c in rows])


@clusters_app.command()
def show(key: str = typer.Argument(..., metavar="CLUSTER", callback=path_key), as_json: bool = JsonOpt) -> None:
    """One cluster and its members."""
    data = Client().get(f"/clusters/{key}")
    if as_json:
        return render.print_json(data)
    _members(data)


@clusters_app.command()
def stop(key: str = typer.Argument(..., metavar="CLUSTER", callback=path_key), wait: bool = typer.Option(False, "--wait"),
         as_json: bool = JsonOpt) -> None:
    """Stop every member: all GPUs go back to the pool, the disks stay."""
    client = Client()
    _finish(client, client.post(f"/clusters/{key}/stop"), wait, ["stopped"], as_json)


@clusters_app.command()
def start(key: str = typer.Argument(..., metavar="CLUSTER", callback=path_key), wait: bool = typer.Option(False, "--wait"),
          as_json: bool = JsonOpt) -> None:
    """Start every member again, or none if one cannot get its GPUs back."""
    client = Client()
    _finish(client, client.post(f"/clusters/{key}/start"), wait, ["running"], as_json)


@clusters_app.command()
def rm(key: str = typer.Argument(..., metavar="CLUSTER", callback=path_key), yes: bool = typer.Option(False, "--yes", "-y"),
       wait: bool = typer.Option(False, "--wait"), as_json: bool = JsonOpt) -> None:
    """Release every member (containers and disks deleted) and the cluster's network."""
    client = Client()
    cluster = client.get(f"/clusters/{key}")
    if not yes:
        if not sys.stdin.isatty():
            raise CliError("releasing deletes every member's disks; pass --yes to confirm")
        typer.confirm(f"Release cluster {cluster['name']} and its {cluster['nodes']} members' disks?", abort=True)
    _finish(client, client.delete(f"/clusters/{cluster['id']}"), wait, ["released"], as_json)
