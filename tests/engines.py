"""More Docker engines standing for more hosts: each in its own network namespace (with
a veth link to this one), data root, exec root and socket. Started once per machine and
left running, like the main engine; safe to call again."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import docker


@dataclass(frozen=True)
class EngineHost:
    name: str
    host_addr: str
    engine_addr: str
    # "btrfs": the data root is a btrfs file system of its own (a loop-mounted image), where
    # Docker takes a container size. None: as the main engine.
    storage: str | None = None

    @property
    def socket(self) -> str:
        return f"unix:///run/{self.name}.sock"

    @property
    def root(self) -> Path:
        return Path(f"/var/lib/{self.name}")

    @property
    def pid(self) -> int:
        return int(Path(f"/run/{self.name}.pid").read_text())


SECOND = EngineHost("dytest2", "10.231.0.1", "10.231.0.2")
# Its own engine, for tests that make an engine vanish: no other test uses it.
VANISHING = EngineHost("dytest3", "10.231.0.5", "10.231.0.6")
# The migration tests' target (tests/integration/test_migrate.py), frozen by one of them.
MIGRATION = EngineHost("dytest4", "10.231.0.9", "10.231.0.10")
# An engine on btrfs, for the system disk tests.
BTRFS = EngineHost("dytest5", "10.231.0.13", "10.231.0.14", storage="btrfs")
BTRFS_IMAGE_GB = 12  # sparse: takes only what the engine writes
NAME, SOCKET, HOST_ADDR, ENGINE_ADDR = SECOND.name, SECOND.socket, SECOND.host_addr, SECOND.engine_addr


def _sh(command: str, check: bool = True) -> None:
    subprocess.run(["sh", "-c", command], check=check, capture_output=True)


def _answers(host: EngineHost) -> bool:
    try:
        return docker.DockerClient(base_url=host.socket, timeout=5).ping()
    except Exception:
        return False


def engine(host: EngineHost, images: list[str]) -> docker.DockerClient:
    name = host.name
    if not _answers(host):
        if not Path(f"/var/run/netns/{name}").exists():
            _sh(f"ip netns add {name}")
            _sh(f"ip link add {name}-h type veth peer name {name}-n")
            _sh(f"ip link set {name}-n netns {name}")
            _sh(f"ip addr add {host.host_addr}/30 dev {name}-h && ip link set {name}-h up")
            ns = f"nsenter --net=/var/run/netns/{name}"
            _sh(f"{ns} ip addr add {host.engine_addr}/30 dev {name}-n && {ns} ip link set {name}-n up "
                f"&& {ns} ip link set lo up")
        host.root.mkdir(parents=True, exist_ok=True)
        storage = []
        if host.storage == "btrfs":
            _btrfs_data_root(host)
            storage = ["--storage-driver", "btrfs"]
        # nsenter, not `ip netns exec`: the latter remounts /sys and hides the cgroups dockerd needs.
        subprocess.Popen(
            ["nsenter", f"--net=/var/run/netns/{name}", "dockerd", "-H", host.socket, "--data-root",
             str(host.root / "data"), "--exec-root", f"/run/{name}-exec", "--pidfile", f"/run/{name}.pid",
             *storage],
            stdout=open(host.root / "dockerd.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while not _answers(host):
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd {name} did not start; see {host.root / 'dockerd.log'}")
            time.sleep(0.5)
    client = docker.DockerClient(base_url=host.socket, timeout=300)
    local = docker.from_env()
    for ref in images:
        try:
            client.images.get(ref)
        except docker.errors.ImageNotFound:
            client.images.load(local.images.get(ref).save(named=True))
    return client


def _btrfs_data_root(host: EngineHost) -> None:
    image, data = host.root / "btrfs.img", host.root / "data"
    data.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mountpoint", "-q", str(data)]).returncode == 0:
        return
    if not image.exists():
        _sh(f"truncate -s {BTRFS_IMAGE_GB}G {image} && mkfs.btrfs -q {image}")
    _sh(f"mount -o loop {image} {data}")


def second_engine(images: list[str]) -> docker.DockerClient:
    return engine(SECOND, images)


def far_node_config(host: EngineHost, extra: str = "") -> str:
    """config.toml's `[[nodes]]` entry for `host` as the node "far": two simulated A100s,
    a CPU and 1 GB of memory per GPU (these hosts are small)."""
    return (f'[[nodes]]\nname = "far"\nurl = "{host.socket}"\nsimulated_gpus = "A100-80GB:2"\n{extra}'
            "cpus_per_gpu = 1\nmemory_per_gpu_gb = 1\n")


def freeze(host: EngineHost) -> None:
    """The engine stops answering, as a host that vanished from the network does."""
    os.kill(host.pid, signal.SIGSTOP)


def thaw(host: EngineHost) -> None:
    os.kill(host.pid, signal.SIGCONT)


def clean_engine(engine: docker.DockerClient) -> None:
    """Remove what any Dockyard test server left on an engine of these tests."""
    for container in engine.containers.list(all=True, filters={"label": "dockyard.deployment"}):
        container.remove(force=True)
    for volume in engine.volumes.list(filters={"label": "dockyard.deployment"}):
        volume.remove(force=True)


def remove_images(engine: docker.DockerClient, deployment: str) -> None:
    """Remove the system disk images a test server's migrations left on an engine."""
    for image in engine.images.list(filters={"label": f"dockyard.deployment={deployment}"}):
        engine.images.remove(image.id, force=True)
