"""A real Dockyard server in a subprocess, for integration tests and benchmarks.

Each Server has its own DOCKYARD_HOME, its own database (a SQLite file, or a fresh
PostgreSQL database when DOCKYARD_TEST_DB names a server) and so its own deployment
id: the Docker objects it makes carry that id and are removed when it is closed.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker
import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
BASE_IMAGE = "dockyard/debian:bookworm"
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
DOCKYARD = str(Path(sys.executable).parent / "dockyard")


def test_database_url(home: Path) -> str:
    """SQLite in `home`, or a new database on the PostgreSQL that DOCKYARD_TEST_DB names."""
    server = os.environ.get("DOCKYARD_TEST_DB", "sqlite")
    if server == "sqlite":
        return f"sqlite:///{home / 'dockyard.db'}"
    import psycopg

    name = "dy_" + secrets.token_hex(6)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.rsplit("/", 1)[0] + "/" + name


_ssh_blocks = itertools.count(os.getpid() % 200)


def resolve_localhost_subdomains() -> None:
    """Resolve `*.localhost` to loopback in this process, as browsers do (RFC 6761): the
    default instance hosts (`<id>.localhost`) are not in /etc/hosts."""
    if getattr(socket.getaddrinfo, "dockyard", False):
        return
    original = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if isinstance(host, bytes):
            host = host.decode()
        if isinstance(host, str) and host.lower().rstrip(".").endswith(".localhost"):
            host = "127.0.0.1"
        return original(host, *args, **kwargs)

    getaddrinfo.dockyard = True
    socket.getaddrinfo = getaddrinfo


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, simulated_gpus: str = "A100-80GB:4,RTX-4090:2", **settings: str):
        self.home = Path(tempfile.mkdtemp(prefix="dockyard-test-"))
        self.port = free_port()
        # Each test server publishes SSH ports from its own block, below Linux's ephemeral
        # range (32768+) so no client socket of the suite can hold one.
        ssh_base = 20000 + (next(_ssh_blocks) % 200) * 60
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DOCKYARD_HOME": str(self.home),
            "DOCKYARD_DATABASE_URL": test_database_url(self.home),
            "DOCKYARD_SIMULATED_GPUS": simulated_gpus,
            "DOCKYARD_PORT": str(self.port),
            "DOCKYARD_INSIDE_PORT": str(free_port()),  # dockyard-shutdown's listener (access/inside.py)
            "DOCKYARD_RECONCILE_INTERVAL_S": "1",
            "DOCKYARD_STOP_TIMEOUT_S": "2",
            "DOCKYARD_SSH_PORT_MIN": str(ssh_base),
            "DOCKYARD_SSH_PORT_MAX": str(ssh_base + 59),
            "XDG_CONFIG_HOME": str(self.home / "cli-config"),
            **({"DOCKYARD_BUILD_CA_BUNDLE": HOST_CA_BUNDLE} if Path(HOST_CA_BUNDLE).exists() else {}),
            **{f"DOCKYARD_{k.upper()}": v for k, v in settings.items()},
        }
        self.process: subprocess.Popen | None = None
        self.tokens: dict[str, str] = {}
        self._engine = None

    # ---- process ----------------------------------------------------------------------

    def start(self) -> "Server":
        log = open(self.home / "server.log", "ab")
        self.process = subprocess.Popen([DOCKYARD, "serve"], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("server exited:\n" + self.log())
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not answer:\n" + self.log())

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()

    def log(self) -> str:
        return (self.home / "server.log").read_text(errors="replace")

    def report_failure(self, exc: Exception, tail: int = 3000) -> int:
        """For benchmarks: say what failed, with the end of the server's log; exit status 1."""
        print(f"benchmark failed: {exc!r}", file=sys.stderr)
        try:
            print(self.log()[-tail:], file=sys.stderr)
        except OSError:
            pass
        return 1

    # ---- users and clients ------------------------------------------------------------

    def cli(self, *args: str, token_of: str | None = None, input: str | None = None,
            check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
        env = {**self.env, "DOCKYARD_URL": self.url}
        if token_of:
            env["DOCKYARD_TOKEN"] = self.tokens[token_of]
        result = subprocess.run([DOCKYARD, *args], env=env, input=input, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"dockyard {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def add_user(self, name: str, admin: bool = False, password: str = "correct-horse") -> httpx.Client:
        """A user made as `dockyard admin create-user` makes one (test_api_access runs that
        command itself), in this process: a CLI process per user costs a second."""
        from dockyard.services import audit
        from dockyard.services.users import create_user

        with self._database().begin() as db:
            create_user(db, name, password, admin)
            audit.record(db, "test@server-cli", "user.create", name, "admin" if admin else "")
        token = httpx.post(self.url + "/api/v1/auth/login", json={"user": name, "password": password}).json()["token"]
        self.tokens[name] = token
        return self.client(token)

    def instance_url(self, instance_id: str) -> str:
        """The instance's own origin (the default instance_domain, `{id}.localhost`)."""
        return f"http://{instance_id}.localhost:{self.port}"

    def instance_client(self, instance_id: str, token: str) -> httpx.Client:
        """An API client on the instance's own host, by bearer token (no browser cookie)."""
        return httpx.Client(base_url=self.instance_url(instance_id), headers={"Authorization": f"Bearer {token}"},
                            timeout=30)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url + "/api/v1", headers=headers, timeout=120)

    @property
    def deployment(self) -> str:
        from dockyard.db.models import Meta

        with self._database().begin() as db:
            return db.get(Meta, "deployment").value

    def _database(self):
        """Sessions on the server's database (the server made and migrated it)."""
        from dockyard.db.session import make_engine, make_session_factory

        if self._engine is None:
            self._engine = make_engine(self.env["DOCKYARD_DATABASE_URL"])
        return make_session_factory(self._engine)

    # ---- cleanup ------------------------------------------------------------------------

    def close(self) -> None:
        deployment = None
        try:
            deployment = self.deployment
        except Exception:
            pass
        self.stop()
        if self._engine is not None:
            self._engine.dispose()
        if deployment:
            remove_deployment(deployment)
        unmount_disks(self.home)
        remove_home(self.home)


def unmount_disks(home: Path) -> None:
    """Unmount the loop disks a test server left mounted under its home (runtimes/disks.py)."""
    prefix = str(home) + "/"
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1]
        if target.startswith(prefix):
            subprocess.run(["umount", target], capture_output=True, timeout=60)


def remove_home(home: Path) -> None:
    """Remove a test server's home (its database and loop disk images, which over many runs
    fill a disk) unless DOCKYARD_KEEP_TEST_HOMES=1 asks to keep it for a look afterwards, or
    a disk under it could not be unmounted."""
    if os.environ.get("DOCKYARD_KEEP_TEST_HOMES") == "1":
        return
    prefix = str(home) + "/"
    if any(line.split()[1].startswith(prefix) for line in Path("/proc/self/mounts").read_text().splitlines()):
        return
    shutil.rmtree(home, ignore_errors=True)


def remove_deployment(deployment: str) -> None:
    """Remove every Docker object a test deployment made. A removal the server started
    may still be in progress, so a few passes are made."""
    client = docker.from_env()
    label = {"label": f"dockyard.deployment={deployment}"}
    for attempt in range(10):
        removals = [
            *(lambda c=c: client.api.remove_container(c["Id"], force=True)
              for c in client.api.containers(all=True, filters=label)),
            *(lambda v=v: client.api.remove_volume(v.name, force=True) for v in client.volumes.list(filters=label)),
            *(lambda n=n: client.api.remove_network(n.id) for n in client.networks.list(filters=label)),
            *(lambda t=t: client.api.remove_image(t, force=True)
              for i in client.images.list(filters=label) for t in i.tags),
        ]
        if not removals:
            return
        for remove in removals:
            try:
                remove()
            except docker.errors.APIError:
                pass  # gone already, or still going: the next pass looks again
        time.sleep(0.5)


def wait_status(api: httpx.Client, key: str, *statuses: str, timeout: float = 60) -> dict:
    response = api.get(f"/instances/{key}", params={"wait_for": list(statuses), "timeout": timeout})
    response.raise_for_status()
    data = response.json()
    assert data["status"] in statuses, f"{key} is {data['status']} ({data['status_reason']}), wanted {statuses}"
    return data


def own_address() -> str:
    """This host's address other than loopback (the limits do not apply to loopback)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the source address
            return udp.getsockname()[0]
    except OSError:
        pytest.skip("this host has no address other than loopback")
