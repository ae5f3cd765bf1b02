"""Migration throughput between two engines against a plain `tar | tar`.

Target: migrating an instance with a 2 GiB data disk between two engines in
network namespaces runs at 80% or more of a plain `tar | tar` pipe between the same
engines, measured in the same run.

One `dockyard serve` (tests/harness.py's Server) with two nodes: `local` (this host's
engine) and `far` (tests/engines.py's second engine, in its own network namespace), one
simulated A100 on each; `dockyard/debian:bookworm` registered as debian-12 and loaded on
the second engine, as the tests do. One instance (1 GPU, 3 GB data disk) is made on
`local` and `--size-mib` (default 2048) of /dev/urandom is written to its data disk
(untimed); it is stopped. Then `--runs` rounds (default 3), each moving it to the other
node, so the rounds alternate local -> far, far -> local, ...; in each round, in turn:

1. tar      the plain pipe, from the engine the instance is on to the other one:
              docker -H SRC exec S tar -c -C /d .  |  docker -H DST exec -i T tar -x -C /d
            S is a container of the base image mounting the stopped instance's data disk
            read-only (the very disk the migration then copies), T one mounting a fresh
            plain volume on the other engine; both are made and started untimed, and
            the received size is checked and both removed untimed. Timed: the pipeline,
            from its start to both ends' exit.
2. dockyard POST /instances/{id}/migrate {"node": OTHER}, timed from the POST until the
            instance leaves `migrating` (`starting` on OTHER: docs/migrate.md's step 4,
            every disk copied and checked). Polled every 100 ms, with the migration
            operation's phase, for the breakdown. Its first start there (to `running`)
            is timed separately and is not part of the migration; it is then stopped,
            untimed, and its old disks are left to be removed from the source as usual.

Throughput: the data disk's bytes over the time, in MB/s (10^6). The migration also
copies the system disk (a commit of the stopped container, `docker save` into `docker
load`), part of its time; the tar pipe copies only the data. Printed: each run, medians,
the phase breakdown and the ratio median Dockyard MB/s / median tar MB/s, with PASS if it
is >= 0.8, else MISS. The exit status is 0 either way (1 only when it could not run).
Everything it made is removed: its instance, its helper containers and volumes, and the
server's objects and system disk images on both engines (by its deployment label), and
the server's home with its disks' files.

    .venv/bin/python bench/migrate.py [--runs 3] [--size-mib 2048]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import docker  # noqa: E402
from docker.errors import NotFound  # noqa: E402

from tests.engines import SECOND, second_engine, remove_images  # noqa: E402
from tests.harness import BASE_IMAGE, Server, wait_status  # noqa: E402

GPU_MODEL = "A100-80GB"
TARGET = 0.8
MIB = 1024 ** 2
MB = 1000 ** 2
LOCAL_SOCKET = "unix:///var/run/docker.sock"
POLL_S = 0.1
DEADLINE_S = 1800.0


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---- the plain pipe ------------------------------------------------------------------------


class TarPipe:
    """The baseline's helpers, labelled with this run's own label so that only they are removed."""

    def __init__(self, engines: dict[str, docker.DockerClient], sockets: dict[str, str]):
        self.engines, self.sockets = engines, sockets
        self.label = {"dockyard.bench": f"migrate-{uuid.uuid4().hex[:12]}"}

    def once(self, source: str, target: str, volume: str, size: int) -> float:
        src, dst = self.engines[source], self.engines[target]
        into = dst.volumes.create(f"bench-migrate-{uuid.uuid4().hex[:12]}", labels=self.label)
        made = []
        try:
            made.append(src.containers.run(BASE_IMAGE, ["sleep", "infinity"], detach=True, labels=self.label,
                                           network_mode="none", volumes={volume: {"bind": "/d", "mode": "ro"}}))
            made.append(dst.containers.run(BASE_IMAGE, ["sleep", "infinity"], detach=True, labels=self.label,
                                           network_mode="none", volumes={into.name: {"bind": "/d", "mode": "rw"}}))
            pipe = (f"set -o pipefail; docker -H {self.sockets[source]} exec {made[0].id} tar -c -C /d . | "
                    f"docker -H {self.sockets[target]} exec -i {made[1].id} tar -x -C /d")
            t0 = time.perf_counter()
            done = subprocess.run(["bash", "-c", pipe], capture_output=True, text=True)
            elapsed = time.perf_counter() - t0
            if done.returncode != 0:
                raise RuntimeError(f"tar | tar failed ({done.returncode}): {done.stderr[-500:]}")
            code, out = made[1].exec_run(["du", "-sb", "/d"])
            got = int(out.split()[0])
            if code != 0 or got < size:
                raise RuntimeError(f"tar | tar delivered {got} bytes, wanted at least {size}")
            return elapsed
        finally:
            for container in made:
                container.remove(force=True, v=True)
            into.remove(force=True)

    def clean(self) -> None:
        """Whatever an interrupted run left of this run's helpers."""
        selector = {"label": f"dockyard.bench={self.label['dockyard.bench']}"}
        for client in self.engines.values():
            for container in client.containers.list(all=True, filters=selector):
                container.remove(force=True, v=True)
            for volume in client.volumes.list(filters=selector):
                volume.remove(force=True)


# ---- the migration ------------------------------------------------------------------------


def migrate_once(api, key: str, target: str) -> tuple[float, float, list[tuple[str, float]]]:
    """Seconds to the switch (`starting` on target), to `running` there, and each phase's start."""
    t0 = time.perf_counter()
    answer = api.post(f"/instances/{key}/migrate", json={"node": target})
    if answer.status_code != 202:
        raise RuntimeError(f"migrate refused: {answer.status_code} {answer.text}")
    op_id = answer.json()["operation"]["id"]
    phases: list[tuple[str, float]] = []
    switched = None
    while time.perf_counter() - t0 < DEADLINE_S:
        view = api.get(f"/operations/{op_id}").json()
        now = time.perf_counter() - t0
        if not phases or phases[-1][0] != view["phase"]:
            phases.append((view["phase"], now))
        if switched is None:
            inst = api.get(f"/instances/{key}").json()
            if inst["status"] != "migrating":
                if inst["node"] != target:
                    raise RuntimeError(f"the migration failed: {view.get('error') or inst['status_reason']}")
                switched = now
        if view["done"]:
            if view["error"]:
                raise RuntimeError(f"the migration failed: {view['error']}")
            break
        time.sleep(POLL_S)
    else:
        raise TimeoutError(f"the migration did not end in {DEADLINE_S:.0f} s")
    wait_status(api, key, "running", timeout=300)
    return switched, time.perf_counter() - t0, phases


def breakdown(phases: list[tuple[str, float]], end: float) -> dict[str, float]:
    """Each phase's seconds up to the switch; the names lose the disk's name."""
    spans: dict[str, float] = {}
    for (phase, start), (_, stop) in zip(phases, phases[1:] + [("", end)]):
        if start >= end:
            break
        name = phase.split(" dy-")[0]
        spans[name] = spans.get(name, 0.0) + min(stop, end) - start
    return spans


# ---- main ------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds of one tar pipe and one migration (default 3)")
    parser.add_argument("--size-mib", type=int, default=2048, help="data written to the data disk (default 2048)")
    args = parser.parse_args()
    size = args.size_mib * MIB
    disk_gb = max(3, -(-size * 5 // 4 // 1000 ** 3))

    local = docker.from_env()
    remote = second_engine([BASE_IMAGE])
    engines = {"local": local, "far": remote}
    pipe = TarPipe(engines, {"local": LOCAL_SOCKET, "far": SECOND.socket})
    server = Server(simulated_gpus=f"{GPU_MODEL}:1", cpus_per_gpu="1", memory_per_gpu_gb="1")
    (server.home / "config.toml").write_text(
        f'[[nodes]]\nname = "far"\nurl = "{SECOND.socket}"\nsimulated_gpus = "{GPU_MODEL}:1"\n'
        f'public_host = "{SECOND.engine_addr}"\ncpus_per_gpu = 1\nmemory_per_gpu_gb = 1\n')
    print(f"docker {local.version()['Version']}, {len(os.sched_getaffinity(0))} CPUs, load average {load()}, "
          f"{args.size_mib} MiB, server home {server.home}", flush=True)
    deployment = None
    key = None
    api = None
    try:
        server.start()
        deployment = server.deployment
        api = server.add_user("bench-admin", admin=True)
        api.post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
        made = api.post("/instances", json={"image": "debian-12", "gpu_model": GPU_MODEL, "gpu_count": 1,
                                            "name": "mover", "data_disk_gb": disk_gb})
        made.raise_for_status()
        key = made.json()["id"]
        node = wait_status(api, key, "running", timeout=300)["node"]
        print(f"writing {args.size_mib} MiB of /dev/urandom to the data disk (untimed) ...", flush=True)
        wrote = api.post(f"/instances/{key}/exec", json={"command": [
            "sh", "-c", f"head -c {size} /dev/urandom > /root/data/blob && sync && stat -c %s /root/data/blob"]}).json()
        if wrote["exit_code"] != 0 or wrote["output"].strip() != str(size):
            raise RuntimeError(f"writing the data failed: {wrote}")

        tar_s: list[float] = []
        mig_s: list[float] = []
        start_s: list[float] = []
        spans: list[dict[str, float]] = []
        for index in range(args.runs):
            api.post(f"/instances/{key}/stop").raise_for_status()
            wait_status(api, key, "stopped", timeout=120)
            other = "far" if node == "local" else "local"
            tar_s.append(pipe.once(node, other, f"dy-{deployment}-{key}-data", size))
            switched, running, phases = migrate_once(api, key, other)
            mig_s.append(switched)
            start_s.append(running - switched)
            spans.append(breakdown(phases, switched))
            print(f"  run {index + 1} {node} -> {other}: tar {tar_s[-1]:6.2f} s ({size / MB / tar_s[-1]:6.1f} MB/s)"
                  f"   dockyard {switched:6.2f} s ({size / MB / switched:6.1f} MB/s), then running after "
                  f"{start_s[-1]:.2f} s   load {load()}", flush=True)
            print("      " + "  ".join(f"{name} {s:.2f}" for name, s in spans[-1].items()), flush=True)
            node = other

        tar_med, mig_med = statistics.median(tar_s), statistics.median(mig_s)
        tar_rate, mig_rate = size / MB / tar_med, size / MB / mig_med
        ratio = mig_rate / tar_rate
        print()
        print(f"{args.size_mib} MiB data disk between engines local and far (network namespace), {args.runs} runs")
        print(f"{'':26} {'median s':>9} {'MB/s':>7} {'min s':>7} {'max s':>7}")
        for label, values in (("tar | tar", tar_s), ("dockyard migrate", mig_s)):
            med = statistics.median(values)
            print(f"{label:26} {med:9.2f} {size / MB / med:7.1f} {min(values):7.2f} {max(values):7.2f}")
        print(f"{'  then its first start':26} {statistics.median(start_s):9.2f}")
        print("migration phases, median s: " + "  ".join(
            f"{name} {statistics.median(s.get(name, 0.0) for s in spans):.2f}" for name in spans[0]))
        verdict = "PASS" if ratio >= TARGET else "MISS"
        print(f"ratio dockyard/tar throughput {ratio:.2f} (target >= {TARGET}): {verdict}")
        print(f"load average at the end: {load()}")
        return 0
    except Exception as exc:
        return server.report_failure(exc, tail=4000)
    finally:
        if key and api is not None:
            try:
                api.delete(f"/instances/{key}")
                wait_status(api, key, "released", timeout=120)
            except Exception as exc:  # the deployment's objects are removed below anyway
                print(f"releasing the instance: {exc!r}", file=sys.stderr)
        pipe.clean()
        server.close()
        if deployment:
            mine = {"label": f"dockyard.deployment={deployment}"}
            for container in remote.containers.list(all=True, filters=mine):
                container.remove(force=True, v=True)
            for volume in remote.volumes.list(filters=mine):
                try:
                    volume.remove(force=True)
                except NotFound:
                    pass
            remove_images(remote, deployment)
        shutil.rmtree(server.home, ignore_errors=True)  # its disks' files: the data, twice


if __name__ == "__main__":
    sys.exit(main())
