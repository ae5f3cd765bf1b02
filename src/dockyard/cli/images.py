"""`dockyard images ...` for users and `dockyard admin images ...` for operators."""

from __future__ import annotations

import json
import re
import time
from typing import Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from dockyard.cli import render
from dockyard.cli.client import Client, CliError

images_app = typer.Typer(help="Images: the catalog, and the ones you saved.", invoke_without_command=True)
admin_images = typer.Typer(help="Register, build and pre-pull images.", no_args_is_help=True)
JsonOpt = typer.Option(False, "--json", help="print JSON")
_STEP = re.compile(r"Step (\d+)/(\d+)")


def _size(value: int | None) -> str:
    return f"{value / 2**30:.1f} GB" if value else "-"


@images_app.callback()
def list_images(
    ctx: typer.Context,
    framework: Optional[str] = typer.Option(None, help="e.g. pytorch"),
    version: Optional[str] = typer.Option(None, help="framework version, e.g. 2.9.1"),
    python: Optional[str] = typer.Option(None, help="e.g. 3.12"),
    cuda: Optional[str] = typer.Option(None, help="e.g. 12.8, or none"),
    as_json: bool = JsonOpt,
) -> None:
    """Images you can create instances from, filtered like a picker."""
    if ctx.invoked_subcommand:
        return
    params = {k: v for k, v in dict(framework=framework, version=version, python=python, cuda=cuda).items() if v}
    rows = Client().get("/images", params=params)
    if as_json:
        return render.print_json(rows)
    render.table(None, ["NAME", "FRAMEWORK", "CUDA", "PYTHON", "MIN DRIVER", "SIZE", "STATUS", "NODES"], [
        [i["name"] + (" (default)" if i["is_default"] else ""),
         f"{i['framework']} {i['framework_version']}" if i["framework"] else i["ref"],
         i["cuda"] or "-", i["python"] or "-", i["min_driver"] or "-", _size(i["size_bytes"]),
         i["status"] + ("" if i["public"] else ", private"), ",".join(i["nodes"]) or "-"]
        for i in rows
    ])


# The packages `images show` names; --json lists every locked one.
STACK_HEADLINE = ("numpy", "pandas", "matplotlib", "scikit-learn", "scipy", "tqdm", "ipywidgets", "tensorboard",
                  "jupyterlab", "ipykernel", "jupyter-resource-usage", "jupyter-server-proxy")


@images_app.command("show")
def show(name: str, as_json: bool = JsonOpt) -> None:
    """One image."""
    image = Client().get(f"/images/{name}")
    if as_json:
        return render.print_json(image)
    for key in ("name", "ref", "kind", "status", "status_reason", "framework", "framework_version", "cuda",
                "cudnn", "python", "os", "min_driver", "digest", "description"):
        render.console.print(f"[bold]{key:>17}[/bold]  {image[key] if image[key] not in (None, '') else '-'}")
    render.console.print(f"[bold]{'size':>17}[/bold]  {_size(image['size_bytes'])}")
    render.console.print(f"[bold]{'nodes':>17}[/bold]  {', '.join(image['nodes']) or '-'}")
    packages = image.get("packages") or {}
    if packages:
        headline = [f"{name} {packages[name]}" for name in STACK_HEADLINE if name in packages]
        render.console.print(f"[bold]{'python stack':>17}[/bold]  {', '.join(headline)}")
        render.console.print(f"[bold]{'locked':>17}[/bold]  {len(packages)} packages, sha256 "
                             f"{(image.get('stack_lock_sha256') or '-')[:12]} (all of them: --json)")


@images_app.command("save")
def save(key: str = typer.Argument(..., metavar="ID"), name: str = typer.Argument(..., metavar="NAME[:TAG]"),
         wait: bool = typer.Option(True, "--wait/--no-wait"), as_json: bool = JsonOpt) -> None:
    """Save an instance's system disk as a private image. The data disk (/root/data) is
    NOT part of it: keep data there, and environments on the system disk."""
    client = Client()
    image = client.post(f"/instances/{key}/save", {"name": name})
    if not as_json:
        render.console.print(f"saving {image['name']} (the data disk /root/data is not included)")
    started = time.monotonic()
    with render.console.status("") as spinner:
        while wait and image["status"] == "saving":
            spinner.update(f"{image['status_reason'] or 'saving'}... {time.monotonic() - started:.0f}s")
            time.sleep(0.5)
            try:
                image = client.get(f"/images/{image['name']}")
            except CliError:  # a failed save leaves no image behind; the reason is an event
                raise CliError(f"saving {image['name']} failed; `dockyard events {key}` says why") from None
    if as_json:
        return render.print_json(image)
    render.console.print(f"{image['name']}  {image['status']}  {_size(image['size_bytes'])}")


@images_app.command("rm")
def remove(name: str) -> None:
    """Delete one of your saved images."""
    Client().request("DELETE", f"/images/{name}")
    render.console.print(f"deleted {name}")


@admin_images.command("add")
def add(ref: str, name: str = typer.Option(..., "--name", help="the name users pick")) -> None:
    """Register an image (present on the nodes, or pullable) under a name."""
    image = Client().post("/images", {"ref": ref, "name": name})
    render.console.print(f"registered {image['name']} -> {image['ref']}")


def _prepare(name: str, node: Optional[str]) -> None:
    """Stream a build or pull from the server with a progress display."""
    client = Client()
    params = {"node": node} if node else {}
    result = None
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=render.console, transient=False) as progress:
        task = progress.add_task(name, total=None)
        buffer = b""
        for chunk in client.stream(f"/images/{name}/prepare", method="POST", **params):
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                item = json.loads(line)
                if "progress" in item:
                    text = item["progress"]
                    step = _STEP.search(text)
                    if step:
                        progress.update(task, completed=int(step.group(1)) - 1, total=int(step.group(2)))
                        progress.console.print(text[:160], style="dim", markup=False)
                    elif text.startswith("["):
                        progress.console.print(text, markup=False)
                    progress.update(task, description=escape(f"{name}: {text[:60]}"))
                elif "error" in item:
                    raise CliError(item["error"])
                else:
                    result = item["image"]
                    progress.update(task, completed=progress.tasks[0].total or 1, total=progress.tasks[0].total or 1,
                                    description=f"{name}: ready")
    if result is None:
        raise CliError("the server ended the stream without a result")
    render.console.print(f"{result['name']} ready on {', '.join(result['nodes'])}: {result['ref']}, "
                         f"{_size(result['size_bytes'])}, {result['digest']}")


@admin_images.command("build")
def build(name: str, node: Optional[str] = typer.Option(None, help="one node (default: all)")) -> None:
    """Build a catalog image from its recipe on a node, with progress, and register it."""
    _prepare(name, node)


@admin_images.command("pull")
def pull(name: str, node: Optional[str] = typer.Option(None, help="one node (default: all)")) -> None:
    """Pre-pull an image (or pre-build a catalog one) onto nodes, so creates need not wait."""
    _prepare(name, node)


@admin_images.command("publish")
def publish(name: str) -> None:
    """Make a saved image available to everyone."""
    image = Client().post(f"/images/{name}/publish")
    render.console.print(f"{image['name']} is now public")


@admin_images.command("cache")
def cache(as_json: bool = JsonOpt) -> None:
    """Which node holds which image."""
    rows = Client().get("/images/cache")
    if as_json:
        return render.print_json(rows)
    render.table(None, ["NODE", "IMAGE", "REFERENCE", "DIGEST"], [[r["node"], r["image"], r["ref"], (r["digest"] or "-")[:19]] for r in rows])
