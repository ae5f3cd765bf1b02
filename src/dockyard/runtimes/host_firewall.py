"""Instances may not reach the host they run on, nor link-local metadata addresses.

Packets from an instance's network to the host itself (any of its addresses: the
platform's API, the engine, the database, whatever else listens there) pass the
host's INPUT chain; packets to 169.254.0.0/16 (cloud metadata services, which hand out
credentials) pass FORWARD, where Docker leaves DOCKER-USER to the operator. One chain
of ours, rebuilt whole at every start (idempotent), is jumped to from both. Replies to
connections the host opened (the proxy, SSH forwarding) are let through, as are the
host ports an operator names (a package mirror on the host, say).
"""

from __future__ import annotations

import logging
import shutil
import subprocess

log = logging.getLogger(__name__)
CHAIN = "DOCKYARD-INSTANCES"
METADATA = "169.254.0.0/16"


def rules(pools: list[str], open_ports: list[int]) -> list[list[str]]:
    """The chain's rules, in order (arguments after `iptables -A CHAIN`)."""
    out = [["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"]]
    for pool in pools:
        out.append(["-s", pool, "-d", METADATA, "-j", "DROP"])
        for port in open_ports:
            out.append(["-s", pool, "-p", "tcp", "--dport", str(port), "-m", "addrtype", "--dst-type", "LOCAL",
                        "-j", "RETURN"])
        out.append(["-s", pool, "-m", "addrtype", "--dst-type", "LOCAL", "-j", "DROP"])
    return out


def protect_host(pools: list[str], open_ports: list[int], iptables: str | None = None) -> str | None:
    """Install the rules; None when done, else why not (no iptables, no permission)."""
    iptables = iptables or shutil.which("iptables")
    if not iptables:
        return "iptables is not installed"

    def run(*args: str, check: bool = True) -> bool:
        done = subprocess.run([iptables, "-w", "5", *args], capture_output=True, text=True, timeout=30)
        if check and done.returncode != 0:
            raise RuntimeError(done.stderr.strip() or f"iptables {' '.join(args)} failed")
        return done.returncode == 0

    try:
        if not run("-N", CHAIN, check=False):
            run("-F", CHAIN)
        for rule in rules(pools, open_ports):
            run("-A", CHAIN, *rule)
        for parent in ("INPUT", "DOCKER-USER"):
            if not run("-L", parent, "-n", check=False):
                if parent == "DOCKER-USER":  # the engine makes it; without it FORWARD itself
                    parent = "FORWARD"
                else:
                    continue
            if not run("-C", parent, "-j", CHAIN, check=False):
                run("-I", parent, "1", "-j", CHAIN)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None
