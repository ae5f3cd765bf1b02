"""`dockyard admin ...`: operator commands. `create-user` works on the server's database
directly (there is no user yet to call the API with) and `simulate` is an offline tool over
local trace files; the rest go through the API."""

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
from dockyard.cli import billing as _billing  # noqa: E402
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
    render.table(None, ["NODE", "URL", "ONLINE", "CPUS", "MEMORY", "CPUS/GPU", "MEM/GPU", "DRIVER", "MAX CUDA",
                        "PLACEMENT"], [
        [n["name"], n["url"], "yes" if n["online"] else f"no: {n['status_reason']}", n["cpus"],
         f"{n['memory_bytes'] / 2**30:.0f} GB", f"{n['cpus_per_gpu']:.2f}", f"{n['memory_per_gpu_bytes'] / 2**30:.1f} GB",
         n["driver_version"] or "-", n["cuda_version"] or "-", n["placement_policy"]]
        for n in rows
    ])


@admin.command("simulate")
def simulate(
    nodes: str = typer.Option(..., "--nodes", help="node list CSV (openb format: sn,cpu_milli,memory_mib,gpu,model)"),
    pods: str = typer.Option(..., "--pods", help="task list CSV (openb format: cpu_milli,memory_mib,num_gpu,gpu_milli[,gpu_spec])"),
    policy: str = typer.Option("dockyard", "--policy", help="first-fit, best-fit, fgd or dockyard"),
    seed: int = typer.Option(42, "--seed", help="seed of the resampling and the shuffle"),
    load: float = typer.Option(1.3, "--load", help="arrived GPU requests to reach, as a multiple of GPU capacity"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Replay a cluster trace against a placement policy, offline: reads local files, needs no server.

    Tasks are drawn from PODS with replacement until their GPU requests reach LOAD x the cluster's GPUs, shuffled with SEED and placed one at a time with no departures. Prints the unallocated share of GPU capacity at each 10% of arrived load and the time per placement decision."""
    from dockyard.core.policies import POLICY_NAMES
    from dockyard.core.simulation import simulate as run_simulation
    from dockyard.core.traces import TraceError, parse_nodes, parse_pods

    if policy not in POLICY_NAMES:
        raise CliError(f"--policy: unknown policy {policy!r}; choose from {', '.join(POLICY_NAMES)}")
    if not 0 < load <= 10:
        raise CliError(f"--load: {load} is out of range (above 0, at most 10)")
    try:
        cluster = parse_nodes(_trace_lines(nodes), nodes)
        tasks = parse_pods(_trace_lines(pods), pods)
        result = run_simulation(cluster, tasks, policy, seed, load)
    except (TraceError, ValueError) as exc:
        raise CliError(str(exc)) from None
    if as_json:
        return render.print_json(result.as_dict())
    render.console.print(f"{policy}, seed {seed}: {result.placed} tasks placed, {result.failed} not placed")
    render.table(None, ["ARRIVED LOAD", "UNALLOCATED GPU"],
                 [[f"{s.load:.0%}", f"{s.unallocated_pct:.2f}%"] for s in result.steps])
    render.console.print(f"decision time: p50 {result.decision_ms_p50:.3f} ms, p99 {result.decision_ms_p99:.3f} ms "
                         f"(CPU time: p50 {result.decision_cpu_ms_p50:.3f} ms, p99 {result.decision_cpu_ms_p99:.3f} ms)")


def _trace_lines(path: str) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return f.readlines()
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CliError(f"{path}: not a UTF-8 text file") from None
