"""`dockyard admin ...`: operator commands. `create-user` works on the server's database
directly (there is no user yet to call the API with); the rest go through the API."""

from __future__ import annotations

import getpass
import secrets
import sys

import typer

from dockyard.cli import render
from dockyard.cli.client import Client, CliError
from dockyard.cli.images import admin_images

admin = typer.Typer(help="Operator commands.", no_args_is_help=True)
admin.add_typer(admin_images, name="images")
from dockyard.cli.mirrors import admin_mirrors  # noqa: E402
admin.add_typer(admin_mirrors, name="mirrors")
from dockyard.cli import billing as _billing  # noqa: E402  issue 5
admin.add_typer(_billing.prices_app, name="prices")
admin.add_typer(_billing.ledger_app, name="ledger")
admin.command("credit")(_billing.credit)
admin.command("voucher")(_billing.voucher)


@admin.command("create-user")
def create_user(name: str, is_admin: bool = typer.Option(False, "--admin", help="make an operator"),
                password_stdin: bool = typer.Option(False, "--password-stdin")) -> None:
    """Create a user in the server's database (run on the server machine)."""
    from dockyard.config import get_settings
    from dockyard.core.errors import DockyardError
    from dockyard.services.platform import open_platform
    from dockyard.services import audit
    from dockyard.services.users import create_user as create

    generated = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise CliError("the passwords differ")
    else:
        password = generated = secrets.token_urlsafe(16)
    platform = open_platform(get_settings())
    try:
        with platform.sessions.begin() as db:
            create(db, name, password, is_admin)
            audit.record(db, f"{getpass.getuser()}@server-cli", "user.create", name, "admin" if is_admin else "")
    except DockyardError as exc:
        raise CliError(exc.message) from None
    render.console.print(f"created {'admin' if is_admin else 'user'} {name}")
    if generated:
        render.console.print(f"password (shown once): {generated}")


@admin.command("nodes")
def nodes(as_json: bool = typer.Option(False, "--json")) -> None:
    """Nodes, their shares per GPU and whether they are online."""
    rows = Client().get("/nodes")
    if as_json:
        return render.print_json(rows)
    render.table(None, ["NODE", "URL", "ONLINE", "CPUS", "MEMORY", "CPUS/GPU", "MEM/GPU", "DRIVER", "MAX CUDA"], [
        [n["name"], n["url"], "yes" if n["online"] else f"no: {n['status_reason']}", n["cpus"],
         f"{n['memory_bytes'] / 2**30:.0f} GB", f"{n['cpus_per_gpu']:.2f}", f"{n['memory_per_gpu_bytes'] / 2**30:.1f} GB",
         n["driver_version"] or "-", n["cuda_version"] or "-"]
        for n in rows
    ])
