"""What the start's files cost on the create path, and whether moving their upload helps.

The driver uploads one small archive (SSH keys, dockyard-shutdown and its token) into
each container before it starts it. Measures, on the local Docker engine, N times:

1. created   the archive into a created container (what the driver does);
2. running   the same archive into the same container once it runs;
3. serial    upload, then `docker start` (the driver's order);
4. parallel  upload on a thread while `docker start` runs.

Prints medians and the ratios running/created and parallel/serial: a ratio near 1.0 says
that moving the upload after the start, or beside it, does not take it off the path.

    .venv/bin/python bench/start_files.py [--runs 8]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tarfile
import threading
import time

import docker

IMAGE = "dockyard/debian:bookworm"
FILES = {"etc/dockyard/shutdown": 80, "usr/local/bin/dockyard-shutdown": 2000, "root/.ssh/authorized_keys": 400}


def archive() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, size in FILES.items():
            info = tarfile.TarInfo(name)
            info.size = size
            tar.addfile(info, io.BytesIO(b"x" * size))
    return out.getvalue()


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=8)
    runs = parser.parse_args().runs
    client, data = docker.from_env(), archive()
    series: dict[str, list[float]] = {"created": [], "running": [], "serial": [], "parallel": []}
    for _ in range(runs):
        container = client.containers.create(IMAGE, ["sleep", "600"])
        series["created"].append(timed(lambda: container.put_archive("/", data)))
        container.start()
        series["running"].append(timed(lambda: container.put_archive("/", data)))
        container.remove(force=True)

        container = client.containers.create(IMAGE, ["sleep", "600"])
        series["serial"].append(timed(lambda: (container.put_archive("/", data), container.start())))
        container.remove(force=True)

        container = client.containers.create(IMAGE, ["sleep", "600"])

        def beside() -> None:
            upload = threading.Thread(target=container.put_archive, args=("/", data))
            upload.start()
            container.start()
            upload.join()
        series["parallel"].append(timed(beside))
        assert container.exec_run(["cat", "/etc/dockyard/shutdown"]).exit_code == 0
        container.remove(force=True)
    medians = {name: statistics.median(values) for name, values in series.items()}
    for name, value in medians.items():
        print(f"{name:9} {value:7.1f} ms (median of {runs})")
    print(f"running/created  {medians['running'] / medians['created']:.2f}x")
    print(f"parallel/serial  {medians['parallel'] / medians['serial']:.2f}x")


if __name__ == "__main__":
    main()
