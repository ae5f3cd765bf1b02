"""`dockyard`: the command line. Everything but `serve`, `admin create-user` and the offline
`admin simulate` goes through the REST API."""

from __future__ import annotations

import getpass
import json
import sys
from typing import Optional

import typer

from dockyard.cli import render
from dockyard.cli.admin import admin
from dockyard.cli.autostop import (AFTER_HELP, GPU_IDLE_HELP, GPU_UNDER_HELP, IDLE_HELP, ON_EXIT_HELP, STOP_AT_HELP,
                                   autostop, keep, notifications, policy_body)
from dockyard.cli.access import jupyter, keys_app, ports_app, ssh, ssh_config
from dockyard.cli import billing
from dockyard.cli.clusters import clusters_app
from dockyard.cli.images import images_app
from dockyard.cli.volumes import volumes_app
from dockyard.cli.metrics import metrics
from dockyard.cli.mirrors import mirrors_app
from dockyard.cli.operations import follow
from dockyard.cli.tokens import logout, passwd, tokens_app
from dockyard.cli.client import CliError, Client, parse_env, parse_minutes, parse_seconds, path_key, save_credentials, server_url, wait_for
from dockyard.core.validation import DEFAULT_DATA_DISK_GB

app = typer.Typer(help="Dockyard: rent GPU container instances.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
app.add_typer(admin, name="admin")
app.add_typer(images_app, name="images")
app.add_typer(volumes_app, name="volumes")
app.add_typer(keys_app, name="keys")
app.command("ssh", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(ssh)
app.command("ssh-config")(ssh_config)
app.command("jupyter")(jupyter)
app.add_typer(ports_app, name="ports")
app.add_typer(mirrors_app, name="mirrors")
app.command("balance")(billing.balance)
app.command("bill")(billing.bill)
app.add_typer(clusters_app, name="cluster")
app.command("metrics")(metrics)  # monitoring
app.command("autostop")(autostop)
app.command("keep")(keep)
app.command("notifications")(notifications)
app.add_typer(tokens_app, name="tokens")
app.command("logout")(logout)
app.command("passwd")(passwd)

JsonOpt = typer.Option(False, "--json", help="print JSON")
QUEUE_HELP = "if the GPUs are taken, wait in line (status queued) and start by itself when they are free"
QUEUE_TIMEOUT_HELP = "with --queue: give up (back to stopped) after this long: 30m, 2h, 1h30m (at most a week)"


def _finish(client: Client, instance: dict, wait: bool, targets: list[str], as_json: bool) -> None:
    if wait:
        with render.console.status(f"{instance['name']}: {instance['status']}..."):
            instance = wait_for(client, "instances", instance["id"], [*targets, "failed"])
    if as_json:
        render.print_json(instance)
    else:
        reason = f" ({instance['status_reason']})" if instance["status_reason"] else ""
        render.console.print(f"{instance['id']}  {instance['name']}  {render.instance_status(instance)}{reason}")
    if instance["status"] == "failed":
        raise typer.Exit(1)


@app.command()
def serve(host: Optional[str] = typer.Option(None, help="address to listen on"),
          port: Optional[int] = typer.Option(None, help="port to listen on")) -> None:
    """Run the API server, reconciler and access endpoints in one process."""
    import logging

    from dockyard.access import front
    from dockyard.api.app import create_app
    from dockyard.config import get_settings

    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    front.serve(create_app(settings), host or settings.host, port or settings.port)


@app.command()
def login(url: str = typer.Option(..., help="the Dockyard server, e.g. http://gpu1:8000"),
          user: str = typer.Option(..., help="your user name"),
          password_stdin: bool = typer.Option(False, "--password-stdin", help="read the password from stdin"),
          scope: str = typer.Option("all", help="what the token may do: all, read, instances or billing"),
          days: Optional[int] = typer.Option(None, "--days", help="token lifetime (default: the server's, 30)"),
          name: Optional[str] = typer.Option(None, "--name", help="a label for `dockyard tokens ls`")) -> None:
    """Log in and save an API token for the next commands."""
    password = sys.stdin.readline().rstrip("\n") if password_stdin else getpass.getpass("Password: ")
    client = Client(url=server_url(url), token="")
    answer = client.post("/auth/login", {"user": user, "password": password, "scope": scope, "expires_days": days,
                                         "name": name})
    path = save_credentials(client.url, answer["user"], answer["token"])
    render.console.print(f"logged in to {client.url} as {answer['user']} (token saved in {path})")


@app.command()
def gpus(as_json: bool = JsonOpt) -> None:
    """The GPU market: GPUs per node and model, free and total."""
    rows = Client().get("/gpus")
    if as_json:
        return render.print_json(rows)
    render.table(None, ["NODE", "GPU", "MEMORY", "FREE", "TOTAL", "SHARES (FREE)", "DRIVER", "MAX CUDA", "KIND"], [
        [r["node"], r["model"], f"{round(r['memory_mb'] / 1024)} GB", r["free"], r["total"], render.shares_text(r),
         r["driver_version"] or "-", r["cuda_version"] or "-",
         ("simulated" if r["simulated"] else "real") + ("" if r["online"] else ", offline")]
        for r in rows
    ])
    for mode, isolation in sorted({(r["sharing"], r["isolation"]) for r in rows if r.get("sharing")}):
        render.console.print(f"{mode} isolates {isolation}", highlight=False)


def gpus_body(gpus: str) -> dict:
    """--gpus 2 is a count of whole GPUs; anything else is a share of one (the server
    says whether it is offered)."""
    text = gpus.strip()
    return {"gpu_count": int(text)} if text.isdecimal() else {"gpu_count": 1, "gpu_share": text}


@app.command()
def create(
    image: str = typer.Option(..., "--image", "-i", help="image name (see `dockyard images`)"),
    name: Optional[str] = typer.Option(None, "--name", "-n"),
    gpu_model: str = typer.Option("any", "--gpu-model", "-m", help="GPU model, or 'any'"),
    gpus: str = typer.Option("1", "--gpus", "-g", help="number of GPUs (0 for none), or a share of one: "
                             "0.5, 0.25, a MIG profile such as 1g.18gb (see `dockyard gpus`)"),
    env: list[str] = typer.Option([], "--env", "-e", help="NAME=VALUE, repeatable"),
    secret_env: list[str] = typer.Option([], "--secret-env", help="NAME=VALUE kept secret (stored encrypted, "
                                                                   "never shown again), repeatable"),
    command: Optional[str] = typer.Option(None, "--cmd", help="start command (default: keep running)"),
    data_disk: int = typer.Option(DEFAULT_DATA_DISK_GB, "--data-disk", help="data disk size in GB, mounted at /root/data"),
    ssh_password: bool = typer.Option(False, "--ssh-password", help="also allow root password login (shown once)"),
    auto_stop_idle: Optional[str] = typer.Option(None, "--auto-stop-idle", help=IDLE_HELP),
    auto_stop_after: Optional[str] = typer.Option(None, "--auto-stop-after", help=AFTER_HELP),
    queue: bool = typer.Option(False, "--queue", help=QUEUE_HELP),
    queue_timeout: Optional[str] = typer.Option(None, "--queue-timeout", help=QUEUE_TIMEOUT_HELP),
    volume: list[str] = typer.Option([], "--volume", "-v",
                                     help="NAME: your volume as the data disk; NAME:/path: mounted there; repeatable"),
    delete_data_on_release: bool = typer.Option(False, "--delete-data-on-release",
                                                help="a release deletes the data disk (default: kept as a volume)"),
    auto_release_days: Optional[int] = typer.Option(None, "--auto-release-days",
                                                    help="release after this many days stopped (at most the operator's)"),
    gpu_idle: Optional[str] = typer.Option(None, "--auto-stop-gpu-idle", help=GPU_IDLE_HELP),
    gpu_under: Optional[int] = typer.Option(None, "--gpu-under", help=GPU_UNDER_HELP),
    stop_at: Optional[str] = typer.Option(None, "--stop-at", help=STOP_AT_HELP),
    stop_on_exit: Optional[bool] = typer.Option(None, "--stop-on-exit", help=ON_EXIT_HELP),
    wait: bool = typer.Option(False, "--wait", help="wait until it is running"),
    as_json: bool = JsonOpt,
) -> None:
    """Rent an instance."""
    client = Client()
    body = {"image": image, "name": name, "gpu_model": gpu_model, **gpus_body(gpus), "env": parse_env(env),
            "secret_env": parse_env(secret_env, "--secret-env"), "command": command, "data_disk_gb": data_disk,
            "ssh_password": ssh_password, "volumes": volume,
            "keep_data_on_release": not delete_data_on_release, "auto_release_days": auto_release_days,
            **policy_body(auto_stop_idle, auto_stop_after, ("--auto-stop-idle", "--auto-stop-after"), gpu_idle,
                          gpu_under, stop_at, stop_on_exit),
            **queue_body(queue, queue_timeout)}
    created = client.post("/instances", body)
    if created.get("ssh_password") and not as_json:
        render.console.print(f"root password (shown once): {created['ssh_password']}", highlight=False)
    _finish(client, created, wait, ["running"], as_json)


@app.command()
def clone(key: str = typer.Argument(..., metavar="ID", callback=path_key), name: str = typer.Option(..., "--name", "-n"),
          gpus: Optional[int] = typer.Option(None, "--gpus", "-g", help="number of GPUs (default: the source's)"),
          wait: bool = typer.Option(False, "--wait", help="wait until it is running"), as_json: bool = JsonOpt) -> None:
    """Clone an instance: a new one on its node, over copies of its system and data disks."""
    client = Client()
    answer = client.post(f"/instances/{key}/clone", {"name": name, **({"gpu_count": gpus} if gpus is not None else {})})
    if answer["instance"].get("ssh_password") and not as_json:
        render.console.print(f"root password (shown once): {answer['instance']['ssh_password']}", highlight=False)
    if wait and not as_json:
        follow(client, answer["operation"])
    _finish(client, answer["instance"], wait, ["running"], as_json)


@app.command("ls")
def list_(all_: bool = typer.Option(False, "--all", "-a", help="include released"), as_json: bool = JsonOpt) -> None:
    """Your instances."""
    rows = Client().get("/instances", params={"all": all_})
    render.print_json(rows) if as_json else render.instances(rows)


@app.command()
def show(key: str = typer.Argument(..., metavar="ID", callback=path_key), as_json: bool = JsonOpt) -> None:
    """One instance, with its events."""
    client = Client()
    data = client.get(f"/instances/{key}")
    history = client.get(f"/instances/{key}/events")
    if as_json:
        return render.print_json({**data, "events": history})
    render.instance(data, history)


@app.command()
def check(key: str = typer.Argument(..., metavar="ID", callback=path_key), as_json: bool = JsonOpt) -> None:
    """Run the environment self-test (dockyard-check) in a running instance."""
    data = Client().post(f"/instances/{key}/check")
    if as_json:
        return render.print_json(data["env_check"])
    render.env_check(data["env_check"])
    if not (data["env_check"] or {}).get("ok"):
        raise typer.Exit(1)


@app.command()
def events(key: str = typer.Argument(..., metavar="ID", callback=path_key), as_json: bool = JsonOpt) -> None:
    """Every status change of an instance, with its time and cause."""
    rows = Client().get(f"/instances/{key}/events")
    if as_json:
        return render.print_json(rows)
    render.table(None, ["TIME", "FROM", "TO", "CAUSE"],
                 [[render.when(e["at"]), e["from_status"] or "-", e["to_status"], e["cause"]] for e in rows])


@app.command()
def stop(key: str = typer.Argument(..., metavar="ID", callback=path_key), wait: bool = typer.Option(False, "--wait"),
         as_json: bool = JsonOpt) -> None:
    """Stop: the GPUs go back to the pool, the system and data disks stay."""
    client = Client()
    _finish(client, client.post(f"/instances/{key}/stop"), wait, ["stopped"], as_json)


@app.command()
def start(key: str = typer.Argument(..., metavar="ID", callback=path_key),
          no_gpu: bool = typer.Option(False, "--no-gpu", help="start without GPUs, to reach the files cheaply"),
          gpus: Optional[int] = typer.Option(None, "--gpus", "-g",
                                             help="resize: this many GPUs (with CPU and memory to match), from now on"),
          queue: bool = typer.Option(False, "--queue", help=QUEUE_HELP),
          queue_timeout: Optional[str] = typer.Option(None, "--queue-timeout", help=QUEUE_TIMEOUT_HELP),
          migrate_: bool = typer.Option(False, "--migrate", help="move to a node with free GPUs of its model "
                                        "(its disks are copied there), then start there"),
          node: Optional[str] = typer.Option(None, "--node", help="with --migrate: the node (default: the best fit)"),
          wait: bool = typer.Option(False, "--wait"), as_json: bool = JsonOpt) -> None:
    """Start a stopped instance on its node, with GPUs assigned afresh (or elsewhere: --migrate)."""
    client = Client()
    body = {"no_gpu": no_gpu, **({"gpu_count": gpus} if gpus is not None else {}), **queue_body(queue, queue_timeout),
            **({"migrate": True} if migrate_ else {}), **({"node": node} if node else {})}
    started = client.post(f"/instances/{key}/start", body)
    if migrate_:
        op = next((o for o in client.get("/operations") if o["kind"] == "migrate" and o["instance_id"] == started["id"]
                   and not o["done"]), None)
        return _moved(client, started, op, wait, as_json)
    _finish(client, started, wait, ["running"], as_json)


@app.command()
def migrate(key: str = typer.Argument(..., metavar="ID", callback=path_key), node: str = typer.Option(..., "--node", help="the node to move to"),
            wait: bool = typer.Option(False, "--wait", help="follow the copy and wait until it runs there"),
            as_json: bool = JsonOpt) -> None:
    """Move a stopped instance to another node: its system and data disks are copied there
    and checked, then it starts there (same id, name and Jupyter URL; a new SSH endpoint)."""
    client = Client()
    answer = client.post(f"/instances/{key}/migrate", {"node": node})
    _moved(client, answer["instance"], answer["operation"], wait, as_json)


def _moved(client: Client, instance: dict, op: dict | None, wait: bool, as_json: bool) -> None:
    if wait and op:  # a failed copy raises with the reason: the instance stayed where it was
        follow(client, op, show=not as_json)
    _finish(client, instance, wait, ["running"], as_json)
    if wait and not as_json:
        now = client.get(f"/instances/{instance['id']}")
        render.console.print(f"on node {now['node']}; SSH: {now['ssh_command'] or '-'} "
                             "(changed: run `dockyard ssh-config` again)", highlight=False)


def queue_body(queue: bool, timeout: Optional[str]) -> dict:
    """The queue fields of a start or create (an option left out is not sent)."""
    if timeout is not None and not queue:
        raise CliError("--queue-timeout: only with --queue")
    minutes = parse_minutes(timeout, "--queue-timeout") if timeout is not None else None
    return {"queue": True, **({"queue_timeout_minutes": minutes} if minutes else {})} if queue else {}


@app.command()
def rm(key: str = typer.Argument(..., metavar="ID", callback=path_key), yes: bool = typer.Option(False, "--yes", "-y"),
       keep_data: Optional[str] = typer.Option(None, "--keep-data", metavar="NAME",
                                               help="keep the data disk as the volume NAME"),
       delete_data: bool = typer.Option(False, "--delete-data", help="delete the data disk too"),
       wait: bool = typer.Option(False, "--wait"), as_json: bool = JsonOpt) -> None:
    """Release an instance: its container and system disk are deleted; its data disk is
    kept as a volume (named after it, or --keep-data NAME) unless --delete-data."""
    if keep_data and delete_data:
        raise CliError("give --keep-data NAME or --delete-data, not both")
    client = Client()
    instance = client.get(f"/instances/{key}")
    deletes_data = delete_data or not (keep_data or instance.get("keep_data_on_release", True))
    if not yes:
        if not sys.stdin.isatty():
            raise CliError("releasing deletes the instance's system disk; pass --yes to confirm")
        what = "system and data disks" if deletes_data else "system disk (its data disk is kept as a volume)"
        typer.confirm(f"Release {instance['name']} ({instance['id']}) and delete its {what}?", abort=True)
    params = {"keep_data": keep_data} if keep_data else {"delete_data": True} if delete_data else {}
    _finish(client, client.delete(f"/instances/{instance['id']}", params=params), wait, ["released"], as_json)


@app.command()
def logs(key: str = typer.Argument(..., metavar="ID", callback=path_key), tail: int = typer.Option(200, "--tail"),
         follow: bool = typer.Option(False, "--follow", "-f")) -> None:
    """The output of the instance's start command."""
    for chunk in Client().stream(f"/instances/{key}/logs", tail=tail, follow=follow):
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec(key: str = typer.Argument(..., metavar="ID", callback=path_key), command: list[str] = typer.Argument(..., metavar="-- CMD..."),
         timeout: str = typer.Option("10m", "--timeout", help="stop the command after this long (30s, 10m, 2h)")) -> None:
    """Run a command in a running instance, printing its output as it comes."""
    body = {"command": command, "timeout_s": parse_seconds(timeout, "--timeout"), "stream": True}
    pending, end = b"", {}
    for chunk in Client().stream(f"/instances/{key}/exec", "POST", body):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in filter(None, lines):
            message = json.loads(line)
            if "output" in message:
                sys.stdout.write(message["output"])
                sys.stdout.flush()
            else:
                end = message
    if end.get("timed_out"):
        print(f"error: the command ran past --timeout {timeout} and was stopped", file=sys.stderr)
    elif end.get("truncated"):
        print("error: the command's output passed the server's cap; it was stopped", file=sys.stderr)
    elif not end:
        raise CliError("the connection ended before the command did")
    raise typer.Exit(end.get("exit_code", -1) if end.get("exit_code", -1) >= 0 else 124)


def run() -> None:
    try:
        app()
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
