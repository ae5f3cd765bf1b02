"""A second Docker engine standing for a second host: its own network namespace (with a
veth link to this one), data root, exec root and socket. Started once per machine and
left running, like the main engine; safe to call again."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import docker

NAME = "dytest2"
SOCKET = f"unix:///run/{NAME}.sock"
HOST_ADDR, ENGINE_ADDR = "10.231.0.1", "10.231.0.2"
ROOT = Path(f"/var/lib/{NAME}")


def _sh(command: str, check: bool = True) -> None:
    subprocess.run(["sh", "-c", command], check=check, capture_output=True)


def _answers() -> bool:
    try:
        return docker.DockerClient(base_url=SOCKET, timeout=5).ping()
    except Exception:
        return False


def second_engine(images: list[str]) -> docker.DockerClient:
    if not _answers():
        if not Path(f"/var/run/netns/{NAME}").exists():
            _sh(f"ip netns add {NAME}")
            _sh(f"ip link add {NAME}-h type veth peer name {NAME}-n")
            _sh(f"ip link set {NAME}-n netns {NAME}")
            _sh(f"ip addr add {HOST_ADDR}/30 dev {NAME}-h && ip link set {NAME}-h up")
            ns = f"nsenter --net=/var/run/netns/{NAME}"
            _sh(f"{ns} ip addr add {ENGINE_ADDR}/30 dev {NAME}-n && {ns} ip link set {NAME}-n up && {ns} ip link set lo up")
        ROOT.mkdir(parents=True, exist_ok=True)
        # nsenter, not `ip netns exec`: the latter remounts /sys and hides the cgroups dockerd needs.
        subprocess.Popen(
            ["nsenter", f"--net=/var/run/netns/{NAME}", "dockerd", "-H", SOCKET, "--data-root", str(ROOT / "data"),
             "--exec-root", f"/run/{NAME}-exec", "--pidfile", f"/run/{NAME}.pid"],
            stdout=open(ROOT / "dockerd.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while not _answers():
            if time.monotonic() > deadline:
                raise RuntimeError(f"second dockerd did not start; see {ROOT / 'dockerd.log'}")
            time.sleep(0.5)
    client = docker.DockerClient(base_url=SOCKET, timeout=300)
    local = docker.from_env()
    for ref in images:
        try:
            client.images.get(ref)
        except docker.errors.ImageNotFound:
            client.images.load(local.images.get(ref).save(named=True))
    return client


def clean_second_engine(engine: docker.DockerClient) -> None:
    """Remove what any Dockyard test server left on the second engine."""
    for container in engine.containers.list(all=True, filters={"label": "dockyard.deployment"}):
        container.remove(force=True)
    for volume in engine.volumes.list(filters={"label": "dockyard.deployment"}):
        volume.remove(force=True)
