"""`dockyard keys ...`, `dockyard ssh` and `dockyard ssh-config`: SSH with the stock client."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Optional

import typer

from dockyard.cli import render
from dockyard.cli.client import Client, CliError

keys_app = typer.Typer(help="Your SSH public keys, installed in your instances at each start.",
                       no_args_is_help=True)
BEGIN, END = "# >>> dockyard (managed by `dockyard ssh-config`) >>>", "# <<< dockyard <<<"


@keys_app.command("add")
def add(path: str = typer.Argument(..., help="a public key file (e.g. ~/.ssh/id_ed25519.pub), or - for stdin"),
        name: Optional[str] = typer.Option(None, "--name", help="default: the file's name")) -> None:
    """Register a public key (ed25519, ECDSA, or RSA of at least 2048 bits)."""
    if path == "-":
        text, default_name = sys.stdin.read(), "key"
    else:
        try:
            text = Path(path).expanduser().read_text()
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror}") from None
        default_name = re.sub(r"[^A-Za-z0-9_-]", "-", Path(path).name.removesuffix(".pub"))
    key = Client().post("/keys", {"name": name or default_name, "public_key": text})
    render.console.print(f"added {key['name']}: {key['key_type']} {key['bits']} bits {key['fingerprint']}")


@keys_app.command("ls")
def list_keys(as_json: bool = typer.Option(False, "--json")) -> None:
    """Your keys."""
    rows = Client().get("/keys")
    if as_json:
        return render.print_json(rows)
    render.table(None, ["NAME", "TYPE", "BITS", "FINGERPRINT", "ADDED"],
                 [[k["name"], k["key_type"], k["bits"], k["fingerprint"], render.when(k["created_at"])] for k in rows])


@keys_app.command("rm")
def remove(key: str = typer.Argument(..., help="name or fingerprint")) -> None:
    """Remove a key; it stops working in each instance at its next start."""
    Client().request("DELETE", f"/keys/{key}")
    render.console.print(f"removed {key}")


def _ssh_target(instance: dict) -> tuple[str, str]:
    command = instance.get("ssh_command")
    if not command or instance["status"] != "running":
        raise CliError(f"instance {instance['name']} is {instance['status']}; SSH needs it running")
    _, _, port, target = command.split()
    return port, target


def ssh(key: str = typer.Argument(..., metavar="ID"),
        command: Optional[list[str]] = typer.Argument(None, metavar="[-- CMD...]")) -> None:
    """Log in to an instance with the OpenSSH client (or run CMD there)."""
    port, target = _ssh_target(Client().get(f"/instances/{key}"))
    args = ["ssh", "-p", port, "-o", "StrictHostKeyChecking=accept-new", target, *(command or [])]
    os.execvp("ssh", args)


def ssh_config(path: str = typer.Option("~/.ssh/config", help="the OpenSSH client config to update")) -> None:
    """Write `Host <instance-name>` entries so that `ssh NAME`, scp and VS Code just work."""
    rows = [i for i in Client().get("/instances") if i.get("ssh_command")]
    block = [BEGIN]
    for instance in rows:
        _, _, port, target = instance["ssh_command"].split()
        user, host = target.split("@")
        block += [f"Host {instance['name']}", f"  HostName {host}", f"  Port {port}", f"  User {user}",
                  "  StrictHostKeyChecking accept-new", ""]
    block.append(END)
    config = Path(path).expanduser()
    config.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = config.read_text() if config.exists() else ""
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        text = before + "\n".join(block) + rest.split(END, 1)[1]
    else:
        text = text + ("\n" if text and not text.endswith("\n") else "") + "\n".join(block) + "\n"
    config.write_text(text)
    config.chmod(0o600)
    render.console.print(f"wrote {len(rows)} host entries to {config}: " + ", ".join(i["name"] for i in rows))


def jupyter(key: str = typer.Argument(..., metavar="ID"),
            open_browser: bool = typer.Option(False, "--open", help="open it in a browser")) -> None:
    """Print (or open) a one-time link that signs you in to the instance's JupyterLab."""
    url = Client().post(f"/instances/{key}/jupyter-link")["url"]
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    print(url)


TENSORBOARD_PORT = 6006
ports_app = typer.Typer(help="HTTP ports of an instance (TensorBoard...) behind the platform.",
                        no_args_is_help=True)


@ports_app.command("ls")
def ports_ls(key: str = typer.Argument(..., metavar="ID"), as_json: bool = typer.Option(False, "--json")) -> None:
    """Exposed ports and their URLs."""
    rows = Client().get(f"/instances/{key}/ports")
    if as_json:
        return render.print_json(rows)
    render.table(None, ["PORT", "URL", "SHARED", "PATH"], [
        [p["port"], p["url"], "yes" if p["shared"] else "no", "whole" if p["keep_path"] else "after the prefix"]
        for p in rows])


@ports_app.command("add")
def ports_add(key: str = typer.Argument(..., metavar="ID"), port: int = typer.Argument(6006),
              keep_path: bool = typer.Option(False, "--keep-path", help=(
                  "send the app the whole path, for an app started with its base path "
                  "(Streamlit's --server.baseUrlPath, Gradio's root_path...; see docs/access.md)"))) -> None:
    """Expose a port, for you only (TensorBoard's 6006 by default)."""
    row = Client().post(f"/instances/{key}/ports", {"port": port, "keep_path": keep_path})
    render.console.print(f"port {row['port']}: {row['url']}")
    if row["keep_path"]:
        render.console.print(f"start the app with the base path {row['base_path']}")
    elif row["port"] == TENSORBOARD_PORT:
        render.console.print("in the instance: tensorboard --logdir runs --port 6006 --bind_all")


@ports_app.command("rm")
def ports_rm(key: str = typer.Argument(..., metavar="ID"), port: int = typer.Argument(...)) -> None:
    """Stop exposing a port."""
    Client().request("DELETE", f"/instances/{key}/ports/{port}")
    render.console.print(f"port {port} closed")


@ports_app.command("share")
def ports_share(key: str = typer.Argument(..., metavar="ID"), port: int = typer.Argument(...),
                revoke: bool = typer.Option(False, "--revoke", help="revoke the link instead")) -> None:
    """Make an unguessable link anyone may open (a new one revokes the old), or revoke it."""
    client = Client()
    if revoke:
        client.request("DELETE", f"/instances/{key}/ports/{port}/share")
        render.console.print(f"the link to port {port} is revoked")
    else:
        print(client.post(f"/instances/{key}/ports/{port}/share")["url"])
