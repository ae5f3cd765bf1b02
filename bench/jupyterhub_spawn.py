"""Create to JupyterLab answering through the proxy: Dockyard against JupyterHub +
DockerSpawner, interleaved in one run on this machine (the target: Dockyard at most
0.8x of JupyterHub).

Each round times, one after the other:

- Dockyard: POST /instances (`pytorch-2.13-cpu`, cached on the engine, one simulated GPU)
  until GET /instances/{id}/jupyter/api/status answers 200 on the instance's own host,
  through Dockyard's front door, with the owner's token; then the instance is released
  (untimed).
- JupyterHub: POST /hub/api/users/{u}/server until the hub says the server is ready and
  /user/{u}/api answers through configurable-http-proxy (the baseline's spawn_bench.py);
  then the server is stopped (untimed).

The baseline is `../shared/baselines/jupyterhub/` (its README, jupyterhub_config.py and
Dockerfile.single-user). What it needs is made here when missing: JupyterHub and
DockerSpawner in a venv (`--hub-venv`, from PyPI, the hub at the single-user image's
version) and the single-user image `jh-single:latest` (from the local Debian base image);
configurable-http-proxy must be on PATH (`npm install -g configurable-http-proxy`).

    .venv/bin/python bench/jupyterhub_spawn.py [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import docker
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.harness import HOST_CA_BUNDLE, Server, resolve_localhost_subdomains, wait_status  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO.parent / "shared" / "baselines" / "jupyterhub"
IMAGE_NAME, IMAGE_REF, GPU_MODEL = "pytorch-2.13-cpu", "dockyard/pytorch:2.13.0-cpu", "A100-80GB"
HUB = "http://127.0.0.1:18000"
HUB_TOKEN = "bench-token-0123456789"  # the baseline config's service token
TARGET = 0.8
DEADLINE_S = 120


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def median_p90(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[max(0, -(-len(ordered) * 9 // 10) - 1)]


# ---- JupyterHub ------------------------------------------------------------------------


def hub_version() -> str:
    found = re.search(r"jupyterhub==([0-9.]+)", (BASELINE / "Dockerfile.single-user").read_text())
    if not found:
        raise RuntimeError("the baseline's Dockerfile.single-user pins no jupyterhub version")
    return found.group(1)


def ensure_hub_venv(venv: Path) -> Path:
    hub = venv / "bin" / "jupyterhub"
    if not hub.exists():
        print(f"making {venv}: jupyterhub=={hub_version()} and dockerspawner from PyPI ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"jupyterhub=={hub_version()}", "dockerspawner"],
                       check=True)
    return hub


def ensure_single_user_image(client: docker.DockerClient) -> None:
    try:
        client.images.get("jh-single:latest")
        return
    except docker.errors.ImageNotFound:
        pass
    print("building jh-single:latest from the baseline's Dockerfile.single-user ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="jh-single-") as context:
        shutil.copy(BASELINE / "Dockerfile.single-user", Path(context) / "Dockerfile")
        ca = Path(HOST_CA_BUNDLE)
        (Path(context) / "ca.crt").write_bytes(ca.read_bytes() if ca.is_file() else b"")
        client.images.build(path=context, tag="jh-single:latest", rm=True)


def hub_call(method: str, path: str, body=None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"{HUB}/hub/api{path}", method=method,
                                     headers={"Authorization": f"token {HUB_TOKEN}",
                                              "Content-Type": "application/json"},
                                     data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(request, timeout=DEADLINE_S) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def start_hub(hub: Path, folder: Path) -> subprocess.Popen:
    if not shutil.which("configurable-http-proxy"):
        raise RuntimeError("configurable-http-proxy is not on PATH: npm install -g configurable-http-proxy")
    shutil.copy(BASELINE / "jupyterhub_config.py", folder / "jupyterhub_config.py")
    process = subprocess.Popen([str(hub), "-f", "jupyterhub_config.py"], cwd=folder,
                               stdout=open(folder / "hub.log", "ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"JupyterHub exited; see {folder / 'hub.log'}")
        try:
            if hub_call("GET", "/")[0] == 200:
                return process
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"JupyterHub did not answer; see {folder / 'hub.log'}")


def hub_spawn(user: str) -> float:
    hub_call("POST", f"/users/{user}")
    t0 = time.perf_counter()
    hub_call("POST", f"/users/{user}/server")
    while True:
        server = json.loads(hub_call("GET", f"/users/{user}")[1]).get("servers", {}).get("", {})
        if server.get("ready"):
            break
        if time.perf_counter() - t0 > DEADLINE_S:
            raise TimeoutError(f"JupyterHub's server for {user} not ready in {DEADLINE_S} s")
        time.sleep(0.05)
    url = f"{HUB}{server['url']}api"
    while True:
        try:
            urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"token {HUB_TOKEN}"}),
                                   timeout=5)
            break
        except urllib.error.HTTPError:
            break  # answered (through the proxy), whatever it said
        except OSError:
            time.sleep(0.05)
    elapsed = time.perf_counter() - t0
    hub_call("DELETE", f"/users/{user}/server")
    while json.loads(hub_call("GET", f"/users/{user}")[1]).get("servers"):
        time.sleep(0.1)
    return elapsed


# ---- Dockyard --------------------------------------------------------------------------


def dockyard_spawn(server: Server, api: httpx.Client, token: str) -> float:
    t0 = time.perf_counter()
    response = api.post("/instances", json={"image": IMAGE_NAME, "gpu_model": GPU_MODEL, "gpu_count": 1})
    response.raise_for_status()
    key = response.json()["id"]
    try:
        with server.instance_client(key, token) as lab:
            while True:
                try:
                    if lab.get(f"/instances/{key}/jupyter/api/status", timeout=5).status_code == 200:
                        return time.perf_counter() - t0
                except httpx.TransportError:
                    pass
                if time.perf_counter() - t0 > DEADLINE_S:
                    raise TimeoutError(f"JupyterLab of {key} did not answer in {DEADLINE_S} s")
                time.sleep(0.05)
    finally:
        api.delete(f"/instances/{key}").raise_for_status()
        wait_status(api, key, "released", timeout=60)


# ---- main ------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed rounds of each (default 7)")
    parser.add_argument("--hub-venv", type=Path, default=Path(tempfile.gettempdir()) / "dockyard-bench-jupyterhub")
    args = parser.parse_args()

    client = docker.from_env()
    try:
        client.images.get(IMAGE_REF)
    except docker.errors.ImageNotFound:
        print(f"{IMAGE_REF} is not on this engine: build it first (docs/images.md)", file=sys.stderr)
        return 1
    hub = ensure_hub_venv(args.hub_venv)
    ensure_single_user_image(client)
    resolve_localhost_subdomains()
    folder = Path(tempfile.mkdtemp(prefix="jh-run-"))
    server = Server(simulated_gpus=f"{GPU_MODEL}:2")
    hub_process = None
    print(f"docker {client.version()['Version']}, {len(os.sched_getaffinity(0))} CPUs, load average {load()}",
          flush=True)
    try:
        hub_process = start_hub(hub, folder)
        server.start()
        api = server.add_user("bench-admin", admin=True)
        token = server.tokens["bench-admin"]
        built = server.cli("admin", "images", "build", IMAGE_NAME, token_of="bench-admin", timeout=1800)
        if built.returncode != 0:
            raise RuntimeError(f"registering {IMAGE_NAME} failed:\n{built.stdout[-2000:]}\n{built.stderr}")
        dockyard_spawn(server, api, token), hub_spawn("warmup")  # untimed: networks, caches
        ours, theirs = [], []
        for index in range(args.runs):
            ours.append(dockyard_spawn(server, api, token))
            theirs.append(hub_spawn("solo"))
            print(f"  round {index + 1}: Dockyard {ours[-1]:.2f} s, JupyterHub {theirs[-1]:.2f} s", flush=True)
        (ours_med, ours_p90), (theirs_med, theirs_p90) = median_p90(ours), median_p90(theirs)
        ratio = ours_med / theirs_med
        print()
        print(f"create -> JupyterLab answering through the proxy, {args.runs} interleaved rounds (s)")
        print(f"{'':28} {'median':>7} {'p90':>7} {'min':>7} {'max':>7}")
        print(f"{'Dockyard':28} {ours_med:7.2f} {ours_p90:7.2f} {min(ours):7.2f} {max(ours):7.2f}")
        print(f"{'JupyterHub + DockerSpawner':28} {theirs_med:7.2f} {theirs_p90:7.2f} {min(theirs):7.2f} "
              f"{max(theirs):7.2f}")
        print(f"ratio of medians {ratio:.2f} (target <= {TARGET}): {'PASS' if ratio <= TARGET else 'MISS'}")
        print(f"load average at the end: {load()}")
        return 0
    except Exception as exc:
        return server.report_failure(exc, tail=4000)
    finally:
        server.close()
        if hub_process is not None:
            hub_process.terminate()
            hub_process.wait(30)


if __name__ == "__main__":
    sys.exit(main())
