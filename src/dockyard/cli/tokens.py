"""`dockyard tokens ls|rm`, `dockyard logout`, `dockyard passwd`: the caller's API tokens."""

from __future__ import annotations

import getpass
import sys

import typer

from dockyard.cli import render
from dockyard.cli.client import CliError, Client, forget_credentials

tokens_app = typer.Typer(help="Your API tokens: list and revoke them.", no_args_is_help=True)


@tokens_app.command("ls")
def tokens_ls(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Your tokens (never the tokens themselves): scope, expiry, last use."""
    rows = Client().get("/auth/tokens")
    if as_json:
        return render.print_json(rows)
    render.table(None, ["ID", "NAME", "SCOPE", "CREATED", "EXPIRES", "LAST USED", ""], [
        [r["id"], r["name"] or "-", r["scope"], r["created_at"][:19], (r["expires_at"] or "never")[:19],
         (r["last_used_at"] or "never")[:19], "this one" if r["current"] else ""] for r in rows])


@tokens_app.command("rm")
def tokens_rm(token_id: int = typer.Argument(..., metavar="ID", help="from `dockyard tokens ls`")) -> None:
    """Revoke a token: it stops working at once."""
    Client().request("DELETE", f"/auth/tokens/{token_id}")
    render.console.print(f"token {token_id} revoked")


def logout() -> None:
    """Revoke the token in use and forget it."""
    client = Client()
    if not client.token:
        raise CliError("not logged in")
    client.request("POST", "/auth/logout")
    forgotten = forget_credentials(client.token)
    render.console.print("logged out" + ("" if forgotten else " (the token from DOCKYARD_TOKEN is revoked)"))


def passwd(password_stdin: bool = typer.Option(False, "--password-stdin",
                                               help="read the current and the new password from stdin, a line each")
           ) -> None:
    """Change your password; every token and browser session of yours ends (log in again)."""
    if password_stdin:
        current, new = sys.stdin.readline().rstrip("\n"), sys.stdin.readline().rstrip("\n")
    else:
        current = getpass.getpass("Current password: ")
        new = getpass.getpass("New password: ")
        if getpass.getpass("New password again: ") != new:
            raise CliError("the new passwords differ")
    client = Client()
    client.request("POST", "/auth/password", json={"current_password": current, "new_password": new})
    forget_credentials(client.token or "")
    render.console.print("password changed; every token is revoked: log in again with `dockyard login`")
