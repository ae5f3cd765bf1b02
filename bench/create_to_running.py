"""Create-to-running latency of Dockyard against a plain `docker run`.

Measures, in one run on the local Docker engine:

1. raw       a plain `docker run -d --rm dockyard/debian:bookworm sleep infinity`
             (docker SDK `containers.run(detach=True)`, then an inspect that sees it
             running), N times after 2 warm-ups; each container is removed, untimed.
2. same-spec the Docker calls Dockyard's driver makes for one instance (volume, inspect
             by name, image check, create with DockerRuntime's own options, the start's
             files, start, inspect), made directly with the SDK: what the engine itself
             costs for Dockyard's richer container, without the platform around it.
3. dockyard  POST /api/v1/instances to `running` (long-poll GET ?wait_for=running),
             N times after 2 warm-ups; each instance is released and waited for
             (untimed) before the next.
   The three single-create series run interleaved (raw, same-spec, dockyard, raw, ...)
   so that other load on the machine falls on all of them alike.
4. concurrency: 10 concurrent creates (threads) until all are running, against the
             single-create median; and 10 concurrent raw runs against the raw median.

Targets: dockyard/same-spec <= 1.10 (median): what the platform adds to the Docker calls
it makes; dockyard/raw <= 1.25 (median and p90); 10 concurrent creates all
running within 2x the single-create median. PASS/MISS is printed; the exit status is 0
either way (1 only when the benchmark itself could not run).

    cd /work/main && .venv/bin/python bench/create_to_running.py [--runs 20]
"""

from __future__ import annotations

import argparse
import math
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import docker  # noqa: E402
from docker.errors import APIError, NotFound  # noqa: E402

from dockyard.config import NodeConfig, Settings  # noqa: E402
from dockyard.runtimes import docker_tools  # noqa: E402
from dockyard.runtimes.base import ContainerSpec  # noqa: E402
from dockyard.runtimes.docker import DockerRuntime, create_options  # noqa: E402
from dockyard.services import inside  # noqa: E402
from tests.harness import BASE_IMAGE, Server, wait_status  # noqa: E402

IMAGE_NAME = "debian-12"
GPU_MODEL = "A100-80GB"
OVERHEAD_TARGET = 1.25
PLATFORM_TARGET = 1.10  # the platform's own share: dockyard against the same Docker calls made directly
CONCURRENCY_TARGET = 2.0
WARMUPS = 2
DOCKER_SOCKET = "unix:///var/run/docker.sock"


# ---- statistics ----------------------------------------------------------------------


def nearest_rank(values: list[float], pct: float) -> float:
    """The nearest-rank percentile: the smallest value with at least pct% at or below it."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: list[float]) -> tuple[float, float]:
    return statistics.median(values), nearest_rank(values, 90)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}"


# ---- raw docker ----------------------------------------------------------------------


def remove_quietly(container) -> None:
    try:
        container.remove(force=True)
    except NotFound:
        pass
    except APIError as exc:  # --rm may already be removing it
        if exc.status_code != 409:
            raise


def raw_once(client: docker.DockerClient, labels: dict[str, str]) -> float:
    """One `docker run -d --rm IMAGE sleep infinity`, timed until it is seen running."""
    start = time.perf_counter()
    container = client.containers.run(BASE_IMAGE, ["sleep", "infinity"], detach=True, remove=True, labels=labels)
    container.reload()
    elapsed = time.perf_counter() - start
    try:
        if container.status != "running":
            raise RuntimeError(f"raw container is {container.status}, not running")
    finally:
        remove_quietly(container)
    return elapsed


def raw_concurrent(client, labels, count: int) -> float:
    """`count` raw runs from threads at once; seconds until every one is running."""
    containers: list = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(count + 1)

    def one() -> None:
        barrier.wait()
        try:
            container = client.containers.run(BASE_IMAGE, ["sleep", "infinity"], detach=True, remove=True,
                                              labels=labels)
            with lock:
                containers.append(container)
            container.reload()
            if container.status != "running":
                raise RuntimeError(f"raw container is {container.status}")
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    for container in containers:
        remove_quietly(container)
    if errors:
        raise RuntimeError(f"{len(errors)} concurrent raw runs failed: {errors[0]!r}")
    return elapsed


# ---- the driver's Docker calls, made directly ----------------------------------------


class SameSpec:
    """The Docker calls DockerRuntime makes for a new instance (background/driver/starting.py
    `run`), made directly with the SDK, minus the platform: volume get (absent) and create,
    inspect by name (absent), image check, `create` with the options DockerRuntime itself
    uses (`create_options`: published SSH port, the tools volume, dropped capabilities,
    probed ulimits, limits), the start's files in one archive upload, start, inspect.
    The user network and the tools volume are made once, as the runtime does per process.
    The data volume binds a directory, as the driver's binds its sized disk's mount point
    (the engine mounts it at every start); making and mounting that disk is the platform's
    work, so it is left out. `limits` are those of a container the server made
    (`container_limits`): a CPU quota slows the start itself, so it is the engine's cost."""

    def __init__(self, client: docker.DockerClient, labels: dict[str, str], limits: dict[str, int]):
        self.client, self.labels, self.limits = client, labels, limits
        runtime = DockerRuntime(NodeConfig(name="local", url=os.environ.get("DOCKER_HOST", DOCKER_SOCKET)))
        runtime.probe_ulimits(BASE_IMAGE)
        self.ulimits = runtime.ulimits
        self.tools = runtime.tools.ensure(BASE_IMAGE)
        self.binds = Path(tempfile.mkdtemp(prefix="dybench-"))
        self.network = "dybench-" + secrets.token_hex(4)
        client.networks.create(self.network, driver="bridge", labels=labels, check_duplicate=True)
        # What the driver uploads before every start: SSH keys, dockyard-shutdown and its token.
        files, dirs = {"etc/dockyard/shutdown": (b"http://GATEWAY:8011\n" + secrets.token_urlsafe(32).encode() + b"\n",
                                                 0o600),
                       "usr/local/bin/dockyard-shutdown": (inside.SCRIPT.encode(), 0o755),
                       "root/.ssh/authorized_keys": (b"ssh-ed25519 " + b"A" * 68 + b" bench\n", 0o600)}, \
            {"etc/dockyard": 0o755, "usr/local/bin": 0o755, "root/.ssh": 0o700}
        self.archive = docker_tools.archive(files, "", 0o755, dirs)

    def spec(self, name: str, volume: str) -> ContainerSpec:
        return ContainerSpec(
            name=name, image=BASE_IMAGE, command=["sleep", "infinity"], hostname=name,
            env={"DOCKYARD_INSTANCE_ID": name, "DOCKYARD_INSTANCE_NAME": name, "DOCKYARD_GPU_UUIDS": "GPU-sim-0",
                 "DOCKYARD_GPUS_PER_NODE": "1", "DOCKYARD_JUPYTER_TOKEN": secrets.token_urlsafe(24),
                 "DOCKYARD_JUPYTER_BASE_URL": f"/instances/{name}/jupyter/", "NCCL_DEBUG": "WARN",
                 "NVIDIA_VISIBLE_DEVICES": "GPU-sim-0"},
            labels={**self.labels, "dockyard.instance": name, "dockyard.owner": "1", "dockyard.gpus": "GPU-sim-0"},
            network=self.network, volumes={volume: "/root/data"},
            ports={22: ("0.0.0.0", None)},  # the engine picks the host port; Dockyard picks a free one
            gpu_uuids=["GPU-sim-0"], **self.limits)

    def once(self) -> float:
        client = self.client
        name = "dybench-" + secrets.token_hex(6)
        volume = name + "-data"
        point = self.binds / volume
        point.mkdir()
        start = time.perf_counter()
        try:
            client.volumes.get(volume)
        except NotFound:
            client.volumes.create(volume, driver="local", labels=self.labels,
                                  driver_opts={"type": "none", "o": "bind", "device": str(point)})
        try:
            client.api.inspect_container(name)
        except NotFound:
            pass
        client.api.inspect_image(BASE_IMAGE)
        container = client.containers.create(BASE_IMAGE, **create_options(client.api, self.spec(name, volume),
                                                                           self.tools, self.ulimits, False))
        client.api.put_archive(container.id, "/", self.archive)
        client.api.start(container.id)
        running = client.api.inspect_container(container.id)["State"]["Running"]
        elapsed = time.perf_counter() - start
        client.api.remove_container(container.id, force=True)
        client.volumes.get(volume).remove(force=True)
        point.rmdir()
        if not running:
            raise RuntimeError("same-spec container is not running")
        return elapsed


def container_limits(client: docker.DockerClient, instance_id: str) -> dict[str, int]:
    """The CPU, memory, process and shared-memory limits of an instance's container, as
    ContainerSpec fields."""
    found = client.api.containers(filters={"label": f"dockyard.instance={instance_id}"})
    host = client.api.inspect_container(found[0]["Id"])["HostConfig"]
    return {"nano_cpus": host["NanoCpus"], "memory_bytes": host["Memory"], "pids_limit": host["PidsLimit"],
            "shm_bytes": host["ShmSize"]}


# ---- dockyard --------------------------------------------------------------------------


def create(api) -> dict:
    response = api.post("/instances", json={"image": IMAGE_NAME, "gpu_model": GPU_MODEL, "gpu_count": 1})
    response.raise_for_status()
    return response.json()


def release(api, key: str) -> None:
    api.delete(f"/instances/{key}").raise_for_status()
    wait_status(api, key, "released", timeout=60)


def server_side(api, key: str) -> float | None:
    """Seconds from the `creating` event to the `running` event, as the server recorded them."""
    events = api.get(f"/instances/{key}/events").json()
    at = {e["to_status"]: datetime.fromisoformat(e["at"]) for e in events}
    if "creating" in at and "running" in at:
        return (at["running"] - at["creating"]).total_seconds()
    return None


def dockyard_once(api, limits_from: docker.DockerClient | None = None) -> tuple[float, float | None, dict | None]:
    """One create to running, timed: (seconds, server-side seconds, and with `limits_from`
    the limits of its container, read before its release)."""
    start = time.perf_counter()
    instance = create(api)
    wait_status(api, instance["id"], "running", timeout=60)
    elapsed = time.perf_counter() - start
    inside = server_side(api, instance["id"])
    limits = container_limits(limits_from, instance["id"]) if limits_from else None
    release(api, instance["id"])
    return elapsed, inside, limits


def serial(client, labels, api, runs: int) -> tuple[list[float], list[float], list[float], list[float], float]:
    """The three single-create series, interleaved run by run so that other load on the
    machine falls on all three alike. Each kind gets WARMUPS untimed runs first; the
    first dockyard create also makes its user network."""
    first, _, limits = dockyard_once(api, limits_from=client)
    same_spec = SameSpec(client, labels, limits)
    print(f"  the server's container, copied by same-spec: {limits['nano_cpus'] / 1e9:g} CPUs, "
          f"{limits['memory_bytes'] / 2**30:.2f} GiB memory, {limits['pids_limit']} processes, "
          f"{limits['shm_bytes'] / 2**30:.2f} GiB /dev/shm", flush=True)
    for index in range(WARMUPS):
        raw_once(client, labels)
        same_spec.once()
        if index:
            dockyard_once(api)
    raw, same, dock, inside = [], [], [], []
    try:
        for _ in range(runs):
            raw.append(raw_once(client, labels))
            same.append(same_spec.once())
            elapsed, server, _ = dockyard_once(api)
            dock.append(elapsed)
            if server is not None:
                inside.append(server)
    finally:
        shutil.rmtree(same_spec.binds, ignore_errors=True)
    return raw, same, dock, inside, first


def dockyard_concurrent(server: Server, token: str, count: int) -> float:
    """`count` creates from threads at once (one client each); seconds until all run."""
    clients = [server.client(token) for _ in range(count)]
    ids: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(count + 1)

    def one(api) -> None:
        barrier.wait()
        try:
            instance = create(api)
            with lock:
                ids.append(instance["id"])
            wait_status(api, instance["id"], "running", timeout=120)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(c,)) for c in clients]
    try:
        for thread in threads:
            thread.start()
        barrier.wait()
        start = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
        if errors:
            raise RuntimeError(f"{len(errors)} concurrent creates failed: {errors[0]!r}")
        return elapsed
    finally:
        for key in ids:
            clients[0].delete(f"/instances/{key}")
        for key in ids:
            wait_status(clients[0], key, "released", timeout=60)
        for api in clients:
            api.close()


# ---- report ----------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(args, raw, same, dock, inside, first, conc_dock, conc_raw) -> None:
    raw_med, raw_p90 = summary(raw)
    dock_med, dock_p90 = summary(dock)
    print()
    print(f"create -> running, {args.runs} runs each after {WARMUPS} warm-ups (ms)")
    print(f"{'':34} {'median':>8} {'p90':>8} {'min':>8} {'max':>8}")
    rows = [("raw docker run", raw), ("docker, Dockyard's spec (direct)", same), ("dockyard POST -> running", dock)]
    if inside:
        rows.append(("  of which server-side (events)", inside))
    for label, values in rows:
        med, p90 = summary(values)
        print(f"{label:34} {ms(med)} {ms(p90)} {ms(min(values))} {ms(max(values))}")
    print(f"{'dockyard first create (cold)':34} {ms(first)}")
    print()
    ratio_med, ratio_p90 = dock_med / raw_med, dock_p90 / raw_p90
    print(f"overhead dockyard/raw   median {ratio_med:5.2f}x   p90 {ratio_p90:5.2f}x   "
          f"target <= {OVERHEAD_TARGET:.2f}x: {verdict(ratio_med <= OVERHEAD_TARGET and ratio_p90 <= OVERHEAD_TARGET)}")
    same_med, same_p90 = summary(same)
    print(f"  (docker with Dockyard's spec / raw: {same_med / raw_med:4.2f}x)")
    platform_med, platform_p90 = dock_med / same_med, dock_p90 / same_p90
    print(f"platform dockyard/spec  median {platform_med:5.2f}x   p90 {platform_p90:5.2f}x   "
          f"target <= {PLATFORM_TARGET:.2f}x: {verdict(platform_med <= PLATFORM_TARGET)}")
    print()
    print(f"concurrency: {args.concurrency} at once, median of {args.rounds} rounds, until all are running (ms)")
    dock_c = statistics.median(conc_dock)
    raw_c = statistics.median(conc_raw)
    print(f"{'':34} {'one':>8} {f'{args.concurrency} at once':>10} {'ratio':>7}   rounds")
    print(f"{'dockyard creates':34} {ms(dock_med)} {ms(dock_c):>10} {dock_c / dock_med:6.2f}x   "
          + " ".join(f"{t * 1000:.0f}" for t in conc_dock))
    print(f"{'raw docker runs':34} {ms(raw_med)} {ms(raw_c):>10} {raw_c / raw_med:6.2f}x   "
          + " ".join(f"{t * 1000:.0f}" for t in conc_raw))
    print(f"target: {args.concurrency} concurrent creates within {CONCURRENCY_TARGET:.0f}x one: "
          f"{verdict(dock_c / dock_med <= CONCURRENCY_TARGET)}  (worst round {max(conc_dock) / dock_med:.2f}x)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs per series (default 20)")
    parser.add_argument("--concurrency", type=int, default=10, help="concurrent creates (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="concurrency rounds (default 3)")
    args = parser.parse_args()

    client = docker.from_env(max_pool_size=max(16, args.concurrency + 4))
    client.images.get(BASE_IMAGE)
    bench_id = secrets.token_hex(4)
    labels = {"dockyard.bench": bench_id}
    # 8 simulated A100s, but at least one per concurrent create.
    gpus = f"{GPU_MODEL}:{max(8, args.concurrency)}"
    # The shipped reconcile interval, not the test harness's 1 s: a pass lists the
    # engine's containers, and every second it would fall inside half the creates.
    server = Server(simulated_gpus=gpus, reconcile_interval_s=str(Settings.model_fields["reconcile_interval_s"].default))
    print(f"docker {client.version()['Version']}, {len(os.sched_getaffinity(0))} CPUs, "
          f"simulated GPUs {gpus}, server home {server.home}", flush=True)
    try:
        server.start()
        admin = server.add_user("bench-admin", admin=True)
        admin.post("/images", json={"ref": BASE_IMAGE, "name": IMAGE_NAME}).raise_for_status()
        token = server.tokens["bench-admin"]

        print("single creates (raw, same-spec, dockyard, interleaved) ...", flush=True)
        raw, same, dock, inside, first = serial(client, labels, admin, args.runs)
        print("concurrency ...", flush=True)
        conc_dock, conc_raw = [], []
        for _ in range(args.rounds):
            conc_dock.append(dockyard_concurrent(server, token, args.concurrency))
            conc_raw.append(raw_concurrent(client, labels, args.concurrency))
        report(args, raw, same, dock, inside, first, conc_dock, conc_raw)
        print(f"\nserver log: {server.home / 'server.log'}")
        return 0
    except Exception as exc:
        return server.report_failure(exc, tail=4000)
    finally:
        server.close()
        cleanup(client, labels)


def cleanup(client: docker.DockerClient, labels: dict[str, str]) -> None:
    """Remove what the raw and same-spec runs left (the server removes its own)."""
    label = {"label": [f"{k}={v}" for k, v in labels.items()]}
    for container in client.containers.list(all=True, filters=label):
        remove_quietly(container)
    for volume in client.volumes.list(filters=label):
        volume.remove(force=True)
    for network in client.networks.list(filters=label):
        network.remove()


if __name__ == "__main__":
    sys.exit(main())
