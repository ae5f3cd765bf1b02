"""Billing commands: `dockyard balance`, `dockyard bill`, and the admin side:
`admin prices set|set-no-gpu|set-storage|ls`, `admin credit`, `admin voucher`, `admin ledger verify`."""

from __future__ import annotations

import sys
import uuid
from typing import Optional

import typer

from dockyard.cli import render
from dockyard.cli.client import Client

JsonOpt = typer.Option(False, "--json", help="print JSON")
prices_app = typer.Typer(help="The price book.", no_args_is_help=True)
ledger_app = typer.Typer(help="The ledger.", no_args_is_help=True)


def balance(user: Optional[str] = typer.Option(None, "--user", help="(admins) another user"),
            as_json: bool = JsonOpt) -> None:
    """Your balance, vouchers, running cost per hour and each instance's cost so far."""
    data = Client().get("/billing/balance", params={"user": user} if user else {})
    if as_json:
        return render.print_json(data)
    cur = data["currency"]
    render.console.print(f"[bold]balance[/bold]  {data['balance']} {cur} (wallet {data['wallet']} {cur})"
                         + ("" if data["billing_enabled"] else "  [dim](billing is off: usage only)[/dim]"))
    render.console.print(f"[bold]spending[/bold] {data['running_cost_per_hour']} {cur}/hour")
    if data["vouchers"]:
        render.table("vouchers", ["ID", "AMOUNT", "LEFT", "EXPIRES"],
                     [[v["id"], v["amount"], v["balance"], render.when(v["expires_at"]) + (" (expired)" if v["expired"] else "")]
                      for v in data["vouchers"]])
    if data["instances"]:
        render.table("instances", ["ID", "NAME", "STATUS", f"{cur}/HOUR", f"COST SO FAR ({cur})"],
                     [[i["id"], i["name"], render.status(i["status"]), i["price_per_hour"], i["cost_so_far"]]
                      for i in data["instances"]])
    for notice in data["notices"][:3]:
        render.console.print(f"[yellow]{render.when(notice['at'])}  {notice['message']}[/yellow]")


def bill(month: Optional[str] = typer.Option(None, "--month", help="YYYY-MM (default: this month)"),
         csv: bool = typer.Option(False, "--csv", help="print CSV"),
         user: Optional[str] = typer.Option(None, "--user", help="(admins) another user"),
         as_json: bool = JsonOpt) -> None:
    """Your statement for a month, by day and instance."""
    params = {k: v for k, v in {"month": month, "user": user}.items() if v}
    client = Client()
    if csv:
        sys.stdout.write(client.request("GET", "/billing/statement", params={**params, "format": "csv"}).text)
        return
    data = client.get("/billing/statement", params=params)
    if as_json:
        return render.print_json(data)
    cur = data["currency"]
    render.table(f"{data['user']}, {data['month']}", ["DAY", "INSTANCE", "KIND", "SECONDS", f"AMOUNT ({cur})"],
                 [[r["day"], r["instance"], r["kind"], r["seconds"], r["amount"]] for r in data["rows"]])
    render.console.print(f"[bold]total[/bold] {data['total']} {cur}")


def _set(kind: str, price: str, model: Optional[str], node: Optional[str], effective: Optional[str], as_json: bool):
    body = {"kind": kind, "price": price, "model": model, "node": node, "effective_from": effective}
    data = Client().post("/billing/prices", body)
    if as_json:
        return render.print_json(data)
    what = data["model"] or kind
    render.console.print(f"{what}{' on ' + data['node'] if data['node'] else ''}: {data['price']} {data['currency']} "
                         f"from {render.when(data['effective_from'])}")


EffectiveOpt = typer.Option(None, "--from", help="ISO time with zone, now or later (default: now)")
NodeOpt = typer.Option(None, "--node", help="only on this node (overrides the price for every node)")


@prices_app.command("set")
def prices_set(model: str = typer.Argument(..., metavar="MODEL"),
               price: str = typer.Argument(..., metavar="PRICE_PER_HOUR", help="per GPU per hour"),
               node: Optional[str] = NodeOpt, effective: Optional[str] = EffectiveOpt, as_json: bool = JsonOpt) -> None:
    """Set the price per GPU per hour of a GPU model."""
    _set("gpu", price, model, node, effective, as_json)


@prices_app.command("set-no-gpu")
def prices_set_no_gpu(price: str = typer.Argument(..., metavar="PRICE_PER_HOUR"), node: Optional[str] = NodeOpt,
                      effective: Optional[str] = EffectiveOpt, as_json: bool = JsonOpt) -> None:
    """Set the price per hour of no-GPU mode (and of 0-GPU instances)."""
    _set("no_gpu", price, None, node, effective, as_json)


@prices_app.command("set-storage")
def prices_set_storage(price: str = typer.Argument(..., metavar="PRICE_PER_GB_DAY"),
                       images: bool = typer.Option(False, "--images", help="saved images instead of data disks"),
                       node: Optional[str] = NodeOpt, effective: Optional[str] = EffectiveOpt,
                       as_json: bool = JsonOpt) -> None:
    """Set the price per GB per day of data disks beyond the free allowance (or of saved images)."""
    _set("image" if images else "disk", price, None, None if images else node, effective, as_json)


@prices_app.command("ls")
def prices_ls(as_json: bool = JsonOpt) -> None:
    """The price book: current, scheduled and past prices."""
    rows = Client().get("/billing/prices")
    if as_json:
        return render.print_json(rows)
    render.table(None, ["KIND", "MODEL", "NODE", "PRICE", "UNIT", "FROM", "STATE"],
                 [[r["kind"], r["model"] or "-", r["node"] or "all", f"{r['price']} {r['currency']}", r["unit"],
                   render.when(r["effective_from"]), r["state"]] for r in rows])


def credit(user: str = typer.Argument(..., metavar="USER"), amount: str = typer.Argument(..., metavar="AMOUNT"),
           request_id: Optional[str] = typer.Option(None, "--request-id", help="retry-safe id (default: new)"),
           as_json: bool = JsonOpt) -> None:
    """Recharge a user's wallet."""
    data = Client().post("/billing/credit", {"user": user, "amount": amount,
                                             "request_id": request_id or uuid.uuid4().hex})
    if as_json:
        return render.print_json(data)
    render.console.print(f"credited {data['amount']} to {user} ({data['key']})")


def voucher(user: str = typer.Argument(..., metavar="USER"), amount: str = typer.Argument(..., metavar="AMOUNT"),
            expires: str = typer.Option(..., "--expires", help="ISO time with zone, e.g. 2026-12-31T00:00:00Z"),
            as_json: bool = JsonOpt) -> None:
    """Grant a voucher, spent before the wallet until it expires."""
    data = Client().post("/billing/vouchers", {"user": user, "amount": amount, "expires_at": expires})
    if as_json:
        return render.print_json(data)
    render.console.print(f"voucher {data['id']}: {data['amount']} for {user} until {render.when(data['expires_at'])}")


@ledger_app.command("verify")
def ledger_verify(as_json: bool = JsonOpt) -> None:
    """Check the ledger: balances equal postings, every run charged exactly once."""
    data = Client().get("/billing/ledger/verify")
    if as_json:
        render.print_json(data)
    else:
        render.console.print(f"{data['postings']} postings, {data['accounts']} accounts, {data['segments']} runs, "
                             f"{data['total_moved']} {data['currency']} moved")
        for problem in data["problems"]:
            render.console.print(f"[red]{problem}[/red]")
        render.console.print("[green]ledger verified[/green]" if data["ok"] else "[red]ledger has problems[/red]")
    if not data["ok"]:
        raise typer.Exit(1)
