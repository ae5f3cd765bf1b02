"""Reading activity: what a container's kernel says about its sockets and processes, and
what JupyterLab says about its kernels and terminals."""

from __future__ import annotations

from datetime import datetime

ESTABLISHED = "01"


def has_established(proc_net_tcp: str, local_port: int) -> bool:
    """Whether /proc/net/tcp(6) text lists an established connection to `local_port`."""
    port = f"{local_port:04X}"
    for line in proc_net_tcp.splitlines():
        fields = line.split()
        if len(fields) > 3 and ":" in fields[1] and fields[1].rsplit(":", 1)[1] == port and fields[3] == ESTABLISHED:
            return True
    return False


def running_names(listing: str) -> set[str]:
    """The names a process listing answers to: lines of 'comm<TAB>argv joined by \\x01'
    (services/autostop.py's PROCESS_LIST). A process is known by its comm, by its program's
    base name and, when its first argument is no option, by that one's ('python train.py' is
    'python' and 'train.py'; 'sh -c "python train.py"' is only 'sh'). One with no arguments
    has exited (a zombie its parent has not reaped) and is left out."""
    names = set()
    for line in listing.splitlines():
        comm, _, args = line.partition("\t")
        argv = [a for a in args.split("\x01") if a]
        if not argv:
            continue
        named = [comm.strip(), argv[0]] + ([argv[1]] if len(argv) > 1 and not argv[1].startswith("-") else [])
        names.update(n.rsplit("/", 1)[-1] for n in named if n)
    return names


def is_running(names: set[str], wanted: str) -> bool:
    """Whether `wanted` is among `names`; the kernel keeps only 15 characters of a comm."""
    return wanted in names or (len(wanted) > 15 and wanted[:15] in names)


def jupyter_active_at(kernels: list, terminals: list, now: datetime) -> datetime | None:
    """When JupyterLab last did work, from its /api/kernels and /api/terminals answers: now
    if a kernel is executing ("busy"), else the latest kernel or terminal `last_activity`
    (JupyterLab moves it on each kernel message or terminal byte, not when a tab polls)."""
    if any(isinstance(k, dict) and k.get("execution_state") == "busy" for k in kernels):
        return now
    times = []
    for item in (*kernels, *terminals):
        text = item.get("last_activity") if isinstance(item, dict) else None
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00")) if isinstance(text, str) else None
        except ValueError:
            when = None
        if when is not None and when.tzinfo is not None:
            times.append(min(when, now))  # a clock ahead of ours does not make it active later
    return max(times, default=None)
