"""`dockyard mirrors` (your additions) and `dockyard admin mirrors` (the site's): package
mirrors every new instance gets in /etc/pip.conf, its apt sources and /etc/conda/.condarc."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dockyard.cli import render
from dockyard.cli.client import Client, CliError

FIELDS = (("pip_index_url", "pip index"), ("apt_mirror_url", "apt mirror"),
          ("conda_channel_url", "conda channel"), ("ca_bundle", "extra CA bundle"))

mirrors_app = typer.Typer(help="Package mirrors for your new instances (additions to the site's).",
                          no_args_is_help=True)
admin_mirrors = typer.Typer(help="The site's package mirrors: every new instance gets them.",
                            no_args_is_help=True)

PipOpt = typer.Option(None, "--pip-index", help="a PyPI-style simple index (http/https)")
AptOpt = typer.Option(None, "--apt-mirror", help="a mirror of the image's distribution (http/https)")
CondaOpt = typer.Option(None, "--conda-channel", help="a conda channel URL (http/https)")
CaOpt = typer.Option(None, "--ca-bundle", help="a PEM file of CA certificates the mirrors need")


def _body(pip_index: str | None, apt_mirror: str | None, conda_channel: str | None, ca_bundle: Path | None) -> dict:
    ca = None
    if ca_bundle is not None:
        try:
            ca = ca_bundle.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"--ca-bundle {ca_bundle}: cannot read it ({exc})") from None
    return {"pip_index_url": pip_index, "apt_mirror_url": apt_mirror, "conda_channel_url": conda_channel,
            "ca_bundle": ca}


def _print(title: str, settings: dict) -> None:
    render.table(title, ["SETTING", "VALUE"], [
        [label, (f"{settings[key].count('BEGIN CERTIFICATE')} certificate(s)" if key == "ca_bundle"
                 else settings[key]) if settings[key] else "-"]
        for key, label in FIELDS])


def _put(path: str, body: dict) -> dict:
    return Client().request("PUT", path, json=body).json()


@mirrors_app.command("show")
def show(as_json: bool = typer.Option(False, "--json")) -> None:
    """The site's mirrors and your additions."""
    view = Client().get("/mirrors")
    if as_json:
        return render.print_json(view)
    _print("site (set by the operator)", view["site"])
    _print("your additions", view["mine"])


@mirrors_app.command("set")
def set_mine(pip_index: Optional[str] = PipOpt, apt_mirror: Optional[str] = AptOpt,
             conda_channel: Optional[str] = CondaOpt, ca_bundle: Optional[Path] = CaOpt) -> None:
    """Replace your additions (an option left out is cleared); new instances get them."""
    _print("your additions", _put("/mirrors", _body(pip_index, apt_mirror, conda_channel, ca_bundle)))


@admin_mirrors.command("show")
def admin_show(as_json: bool = typer.Option(False, "--json")) -> None:
    """The site's mirrors."""
    site = Client().get("/mirrors")["site"]
    if as_json:
        return render.print_json(site)
    _print("site", site)


@admin_mirrors.command("set")
def admin_set(pip_index: Optional[str] = PipOpt, apt_mirror: Optional[str] = AptOpt,
              conda_channel: Optional[str] = CondaOpt, ca_bundle: Optional[Path] = CaOpt) -> None:
    """Replace the site's mirrors (an option left out is cleared); every new instance gets them."""
    _print("site", _put("/mirrors/site", _body(pip_index, apt_mirror, conda_channel, ca_bundle)))
