"""scp throughput into an instance through Dockyard's SSH path against scp straight to
the container's sshd.

On one Server (tests/harness.py) with one simulated GPU (so the instance gets all the
machine's CPUs, no CPU quota below the host's): a user registers a fresh Ed25519 key
and creates a `pytorch-2.13-cpu` instance; then a file of --size-mib MiB (default 1024:
1 GiB of random bytes, written once to a temporary directory under /var/tmp) is copied with the
stock OpenSSH client to /root/data/ in the instance (its data volume):

  dockyard   scp -P <published port> ... FILE root@127.0.0.1:/root/data/bench.bin
             the instance's published SSH port (what `ssh_command` gives: Docker's
             port publishing, docker-proxy here, into the container's sshd)
  dy-hostip  scp -P <published port> ... FILE root@<this host's address>:/root/data/bench.bin
             the same published port at the host's own address (the source address of
             its default route): the kernel's DNAT rule carries it, as it does for a
             client on another machine, whereas a connection to 127.0.0.1 is relayed by
             Docker's userland docker-proxy (skipped when there is no default route)
  direct     scp -P 22 ... FILE root@<container IP>:/root/data/bench.bin
             the container's address on its bridge network, no published port

One untimed warm-up copy each (the file then sits in the page cache), then --runs
(default 3) timed copies each, interleaved (direct, dockyard, dy-hostip, direct, ...); the target
file is removed (untimed) before every copy. Throughput is size / wall time of the scp
process, in MB/s (10^6 bytes); the median per path and dockyard/direct are reported.
Default ciphers (OpenSSH's choice between these two builds; printed). The CPU time of
the docker-proxy process that relays the published port is read from /proc around
each copy and printed.

    cd /work/main && .venv/bin/python bench/scp.py [--runs 3] [--size-mib 1024]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import docker  # noqa: E402

from tests.harness import Server, wait_status  # noqa: E402

IMAGE_NAME = "pytorch-2.13-cpu"
GPU_MODEL = "A100-80GB"
REMOTE = "/root/data/bench.bin"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def host_address() -> str | None:
    """This host's address on its default route (a UDP connect sends nothing)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("198.51.100.1", 9))  # TEST-NET-2: routed by the default route
            address = sock.getsockname()[0]
            return None if address.startswith("127.") else address
    except OSError:
        return None


def proxy_cpu_s(port: str) -> float | None:
    """CPU seconds used so far by the docker-proxy processes relaying `port` (None: none)."""
    total, found = 0.0, False
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if not cmdline[0].endswith(b"docker-proxy") or port.encode() not in cmdline:
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        found = True
    return total if found else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed copies per path (default 3)")
    parser.add_argument("--size-mib", type=int, default=1024, help="file size in MiB (default 1024: 1 GiB)")
    args = parser.parse_args()
    size = args.size_mib << 20

    client = docker.from_env()
    server = Server(simulated_gpus=f"{GPU_MODEL}:1")
    scratch = Path(tempfile.mkdtemp(prefix="dockyard-scp-", dir="/var/tmp"))
    print(f"docker {client.version()['Version']}, {len(os.sched_getaffinity(0))} CPUs, load average {load()}, "
          f"{subprocess.run(['ssh', '-V'], capture_output=True, text=True).stderr.strip()}", flush=True)
    try:
        server.start()
        api = server.add_user("bench")
        key = scratch / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        api.post("/keys", json={"name": "bench", "public_key": key.with_suffix(".pub").read_text()}).raise_for_status()
        created = api.post("/instances", json={"image": IMAGE_NAME, "gpu_model": GPU_MODEL, "gpu_count": 1,
                                               "name": "scp"})
        created.raise_for_status()
        instance = wait_status(api, created.json()["id"], "running", timeout=180)
        _, _, port, target = instance["ssh_command"].split()
        attrs = client.api.inspect_container(f"dy-{server.deployment}-{instance['id']}")
        ip = next(n["IPAddress"] for n in attrs["NetworkSettings"]["Networks"].values() if n.get("IPAddress"))
        common = ["-i", str(key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                  "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"]
        paths = {"direct": ("22", f"root@{ip}"), "dockyard": (port, target)}
        host = host_address()
        if host:
            paths["dy-hostip"] = (port, f"root@{host}")

        def ssh(path: str, command: str, verbose: bool = False) -> subprocess.CompletedProcess:
            p, host = paths[path]
            extra = ["-v"] if verbose else []
            return subprocess.run(["ssh", *common, *extra, "-p", p, host, command], capture_output=True, text=True,
                                  timeout=60)

        deadline = time.monotonic() + 60
        while any(ssh(path, "true").returncode != 0 for path in paths):
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not let us in: {ssh('dockyard', 'true').stderr}")
            time.sleep(0.5)
        negotiated = [line.split("debug1: ", 1)[1] for line in ssh("direct", "true", verbose=True).stderr.splitlines()
                      if "kex: client->server cipher" in line]
        print(f"instance {instance['id']}: dockyard path 127.0.0.1:{port} ({instance['ssh_command']}), "
              f"dy-hostip {host}:{port}, direct {ip}:22; "
              f"{negotiated[0] if negotiated else 'cipher not reported'}", flush=True)

        source = scratch / "bench.bin"
        t0 = time.perf_counter()
        with open(source, "wb") as out:
            left = size
            while left:
                chunk = os.urandom(min(left, 1 << 24))
                out.write(chunk)
                left -= len(chunk)
        print(f"wrote {size:,} random bytes to {source} in {time.perf_counter() - t0:.1f} s", flush=True)

        relay_cpu: dict[str, list[float]] = {path: [] for path in paths}

        def copy(path: str) -> float:
            p, host = paths[path]
            removed = ssh(path, f"rm -f {REMOTE} && sync")
            if removed.returncode != 0:
                raise RuntimeError(f"rm failed: {removed.stderr}")
            cpu = proxy_cpu_s(port)
            t = time.perf_counter()
            done = subprocess.run(["scp", *common, "-P", p, str(source), f"{host}:{REMOTE}"], capture_output=True,
                                  text=True, timeout=1800)
            elapsed = time.perf_counter() - t
            if done.returncode != 0:
                raise RuntimeError(f"scp ({path}) failed: {done.stderr}")
            if cpu is not None:
                relay_cpu[path].append(proxy_cpu_s(port) - cpu)
            return size / elapsed / 1e6

        for path in paths:
            print(f"  warm-up {path:8} {copy(path):7.1f} MB/s", flush=True)
        rates: dict[str, list[float]] = {path: [] for path in paths}
        relay_cpu.update({path: [] for path in paths})  # the timed copies only
        for index in range(args.runs):
            for path in paths:
                rates[path].append(copy(path))
                print(f"  run {index + 1} {path:8} {rates[path][-1]:7.1f} MB/s   (load average {load()})", flush=True)
        landed = ssh("dockyard", f"stat -c %s {REMOTE}").stdout.strip()
        if landed != str(size):
            raise RuntimeError(f"the copy in the instance has {landed} bytes, not {size}")

        print()
        print(f"scp of {size:,} bytes into /root/data/, {args.runs} runs each after 1 warm-up (MB/s = 10^6 bytes/s)")
        med = {path: statistics.median(values) for path, values in rates.items()}
        for path, values in rates.items():
            print(f"  {path:8} median {med[path]:7.1f}   runs " + " ".join(f"{v:.1f}" for v in values))
        for path, values in relay_cpu.items():
            if values and path != "direct":
                print(f"  docker-proxy CPU during the {path} copies: " + " ".join(f"{v:.2f}" for v in values)
                      + " s")
        for path in paths:
            if path != "direct":
                ratio = med[path] / med["direct"]
                print(f"  {path}/direct {ratio:.2f} ({'PASS' if ratio >= 0.8 else 'MISS'} against the 0.80 target)")
        print(f"load average at the end: {load()}")
        return 0
    except Exception as exc:
        return server.report_failure(exc)
    finally:
        server.close()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
