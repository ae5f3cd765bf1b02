"""Start-up and save costs of the PyTorch CPU image through Dockyard.

Measures, on one `dockyard serve` (tests/harness.py's Server) with simulated GPUs:

1. build    `dockyard admin images build pytorch-2.13-cpu` once, so that the catalog
            image is ready. With Docker's layer cache (the image
            `dockyard/pytorch:2.13.0-cpu` already on the engine) this takes seconds; its
            time is printed but it is not the from-scratch build, which this script never
            does (141 s / 1.46 GB, measured separately: see docs/images.md).
2. startup  N times (default 10, after 1 untimed warm-up that also makes the user's
            network): POST /instances (pytorch-2.13-cpu, 1 simulated A100) and, from the
            POST, the time until
              (a) running  the long-poll GET /instances/{id}?wait_for=running returns;
              (b) jupyter  JupyterLab answers GET http://IP:8888/api/status with 200 when
                           given the instance's token;
              (c) ssh      sshd on IP:22 accepts a TCP connection and sends "SSH-2.0".
            (b) and (c) are polled from the host every 50 ms against the container's IP
            on the user's bridge network (found, with the token from the container's
            environment, through the docker SDK), each in its own thread, alongside the
            long-poll. Each instance is released and waited for, untimed.
3. save     in one running instance: save its system disk with no change of ours
            (the fixed cost of a save), then write 1 GiB
            (`dd if=/dev/urandom of=/root/big bs=1M count=1024`, untimed) and save again;
            each save timed from POST /instances/{id}/save until GET /images/NAME says
            `ready` (polled every 100 ms), with the saved image's size against the base
            image's (Docker's `Size`); `--save-runs` each (default 3), the saved image
            deleted (DELETE /images/NAME, untimed) between runs.

Median and p90 (nearest rank) are printed for each series, with the load average.

    cd /work/main && .venv/bin/python bench/image_startup.py [--runs 10] [--save-runs 3]
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import docker  # noqa: E402
import httpx  # noqa: E402
from docker.errors import NotFound  # noqa: E402

from tests.harness import Server, wait_status  # noqa: E402

IMAGE_NAME = "pytorch-2.13-cpu"
IMAGE_REF = "dockyard/pytorch:2.13.0-cpu"
GPU_MODEL = "A100-80GB"
POLL_S = 0.05
DEADLINE_S = 180.0
GB = 1000 ** 3
GIB = 1024 ** 3


# ---- statistics ----------------------------------------------------------------------


def nearest_rank(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


def summary(values: list[float]) -> tuple[float, float]:
    return statistics.median(values), nearest_rank(values, 90)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---- probes from the host ------------------------------------------------------------


def container_address(client: docker.DockerClient, name: str, deadline: float) -> tuple[str, str, str]:
    """The container's IP on its network and its Jupyter token, once it has an IP."""
    while time.perf_counter() < deadline:
        try:
            attrs = client.api.inspect_container(name)
        except NotFound:
            time.sleep(POLL_S)
            continue
        networks = attrs["NetworkSettings"]["Networks"] or {}
        ips = [n["IPAddress"] for n in networks.values() if n.get("IPAddress")]
        if ips:
            env = dict(e.split("=", 1) for e in attrs["Config"]["Env"] or [])
            return ips[0], env.get("DOCKYARD_JUPYTER_TOKEN", ""), env.get("DOCKYARD_JUPYTER_BASE_URL", "/")
        time.sleep(POLL_S)
    raise TimeoutError(f"container {name} got no IP address")


def jupyter_ready(ip: str, token: str, base_url: str, t0: float, deadline: float) -> float:
    url = f"http://{ip}:8888{base_url}api/status"
    with httpx.Client(headers={"X-Dockyard-Proxy-Secret": token}, timeout=2) as http:
        while time.perf_counter() < deadline:
            try:
                if http.get(url).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.TransportError:
                pass
            time.sleep(POLL_S)
    raise TimeoutError("JupyterLab did not answer")


def ssh_ready(ip: str, t0: float, deadline: float) -> float:
    while time.perf_counter() < deadline:
        try:
            with socket.create_connection((ip, 22), timeout=2) as sock:
                banner = b""
                while not banner.startswith(b"SSH-2.0") and len(banner) < 64:
                    chunk = sock.recv(64)
                    if not chunk:
                        break
                    banner += chunk
                if banner.startswith(b"SSH-2.0"):
                    return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(POLL_S)
    raise TimeoutError("sshd did not send its banner")


# ---- one start-up ----------------------------------------------------------------------


def startup_once(server: Server, api: httpx.Client, waiter: httpx.Client, client: docker.DockerClient,
                 deployment: str) -> dict[str, float]:
    times: dict[str, float] = {}
    errors: list[BaseException] = []

    def guarded(label: str, fn, *args) -> None:
        try:
            times[label] = fn(*args)
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    t0 = time.perf_counter()
    response = api.post("/instances", json={"image": IMAGE_NAME, "gpu_model": GPU_MODEL, "gpu_count": 1})
    response.raise_for_status()
    key = response.json()["id"]
    deadline = t0 + DEADLINE_S

    def running() -> float:
        wait_status(waiter, key, "running", timeout=DEADLINE_S)
        return time.perf_counter() - t0

    threads = [threading.Thread(target=guarded, args=("running", running))]
    threads[0].start()
    try:
        ip, token, base_url = container_address(client, f"dy-{deployment}-{key}", deadline)
        threads += [threading.Thread(target=guarded, args=("jupyter", jupyter_ready, ip, token, base_url, t0, deadline)),
                    threading.Thread(target=guarded, args=("ssh", ssh_ready, ip, t0, deadline))]
        for thread in threads[1:]:
            thread.start()
    finally:
        for thread in threads:
            thread.join()
        api.delete(f"/instances/{key}").raise_for_status()
        wait_status(api, key, "released", timeout=60)
    if errors:
        raise RuntimeError(f"instance {key}: {errors[0]!r}")
    return times


# ---- save ------------------------------------------------------------------------------


def save_once(api: httpx.Client, key: str, name: str, base_size: int) -> tuple[float, int]:
    """Seconds from POST save until the image is ready, and the size added to the base."""
    t0 = time.perf_counter()
    api.post(f"/instances/{key}/save", json={"name": name}).raise_for_status()
    deadline = t0 + 600
    while time.perf_counter() < deadline:
        response = api.get(f"/images/{name}:latest")
        if response.status_code == 404:
            raise RuntimeError(f"saving {name} failed: see the instance's events")
        image = response.json()
        if image["status"] == "ready":
            elapsed = time.perf_counter() - t0
            break
        time.sleep(0.1)
    else:
        raise TimeoutError(f"image {name} not ready after 600 s")
    delta = image["size_bytes"] - base_size
    api.delete(f"/images/{name}:latest").raise_for_status()
    return elapsed, delta


def save_series(api: httpx.Client, runs: int) -> dict[str, list[tuple[float, int]]]:
    base_size = api.get(f"/images/{IMAGE_NAME}").json()["size_bytes"]
    instance = api.post("/instances", json={"image": IMAGE_NAME, "gpu_model": GPU_MODEL, "gpu_count": 1}).json()
    key = instance["id"]
    try:
        wait_status(api, key, "running", timeout=DEADLINE_S)
        time.sleep(5)  # let JupyterLab and sshd finish starting: their files are not ours
        series: dict[str, list[tuple[float, int]]] = {"no change": [], "+1 GiB": []}
        for index in range(runs):
            series["no change"].append(save_once(api, key, f"bench-plain-{index}", base_size))
        done = api.post(f"/instances/{key}/exec", json={"command": [
            "bash", "-c", "dd if=/dev/urandom of=/root/big bs=1M count=1024 status=none && sync && "
                          "stat -c %s /root/big"]}).json()
        if done["exit_code"] != 0 or done["output"].strip() != str(GIB):
            raise RuntimeError(f"dd failed: {done}")
        for index in range(runs):
            series["+1 GiB"].append(save_once(api, key, f"bench-big-{index}", base_size))
        return series
    finally:
        api.delete(f"/instances/{key}").raise_for_status()
        wait_status(api, key, "released", timeout=60)


# ---- main ------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="timed start-ups (default 10)")
    parser.add_argument("--save-runs", type=int, default=3, help="timed saves of each kind (default 3)")
    args = parser.parse_args()

    client = docker.from_env()
    server = Server(simulated_gpus=f"{GPU_MODEL}:2")
    print(f"docker {client.version()['Version']}, {len(os.sched_getaffinity(0))} CPUs, "
          f"load average {load()}, server home {server.home}", flush=True)
    try:
        server.start()
        api = server.add_user("bench-admin", admin=True)
        token = server.tokens["bench-admin"]
        deployment = server.deployment

        print(f"building {IMAGE_NAME} through the platform (cached) ...", flush=True)
        try:
            before = client.images.get(IMAGE_REF).id
        except NotFound:
            raise RuntimeError(f"{IMAGE_REF} is not on this engine; build it first (about 141 s, see "
                               "docs/images.md): this benchmark does not build from scratch") from None
        t0 = time.perf_counter()
        build = server.cli("admin", "images", "build", IMAGE_NAME, token_of="bench-admin", timeout=1800)
        build_s = time.perf_counter() - t0
        if build.returncode != 0:
            raise RuntimeError(f"build failed:\n{build.stdout[-2000:]}\n{build.stderr}")
        image = api.get(f"/images/{IMAGE_NAME}").json()
        docker_size = client.images.get(IMAGE_REF).attrs["Size"]
        cached = "same image id, all layers from the cache" if client.images.get(IMAGE_REF).id == before \
            else "a new image id: some layers were rebuilt"

        print("start-ups ...", flush=True)
        with server.client(token) as waiter:
            first = startup_once(server, api, waiter, client, deployment)
            runs = []
            for index in range(args.runs):
                runs.append(startup_once(server, api, waiter, client, deployment))
                print(f"  run {index + 1}: " + "  ".join(f"{k} {v:.2f} s" for k, v in runs[-1].items()),
                      flush=True)
        load_after_startups = load()
        print("saves ...", flush=True)
        saves = save_series(api, args.save_runs)

        print()
        print(f"image {IMAGE_NAME} ({IMAGE_REF})")
        print("  offline build from scratch: measured separately, see docs/images.md (141 s); not rebuilt here")
        print(f"  size (docker image inspect .Size): {docker_size:,} bytes ({docker_size / GB:.2f} GB); "
              f"API size_bytes {image['size_bytes']:,}")
        print(f"  cached build through the platform: {build_s:.1f} s ({cached})")
        print()
        print(f"POST /instances -> ready, {args.runs} runs after 1 warm-up (s)")
        print(f"{'':22} {'median':>7} {'p90':>7} {'min':>7} {'max':>7} {'warm-up':>8}")
        for label, key in (("(a) running", "running"), ("(b) JupyterLab 200", "jupyter"), ("(c) sshd banner", "ssh")):
            values = [r[key] for r in runs]
            med, p90 = summary(values)
            print(f"{label:22} {med:7.2f} {p90:7.2f} {min(values):7.2f} {max(values):7.2f} {first[key]:8.2f}")
        gap = [r["jupyter"] - r["running"] for r in runs]
        print(f"{'  JupyterLab - running':22} {statistics.median(gap):7.2f} {nearest_rank(gap, 90):7.2f}")
        print(f"load average after the start-ups: {load_after_startups}")
        print()
        print(f"POST /instances/{{id}}/save -> image ready, {args.save_runs} runs each (s; size over the base)")
        for label, values in saves.items():
            seconds = [s for s, _ in values]
            deltas = [d for _, d in values]
            med, p90 = summary(seconds)
            print(f"{label:22} median {med:6.2f}  p90 {p90:6.2f}  runs "
                  + " ".join(f"{s:.2f}" for s in seconds)
                  + f"   delta median {statistics.median(deltas) / GB:.3f} GB "
                    f"({statistics.median(deltas):,} bytes)")
        print(f"load average at the end: {load()}")
        print(f"\nserver log: {server.home / 'server.log'}")
        return 0
    except Exception as exc:
        return server.report_failure(exc, tail=4000)
    finally:
        server.close()


if __name__ == "__main__":
    sys.exit(main())
