"""A queued start's latency: from its GPUs being freed to its container started.

Against a real `dockyard serve` (tests/harness.py's Server) on the local Docker engine
with one simulated GPU. Two instances take turns: one runs and holds the GPU, the other
is stopped and then queued (`POST /start {"queue": true}`); the runner is stopped, and
the queued one starts by itself. Per round:

- freed:      the holder's `stopping -> stopped` event, written in the transaction that
              returns its GPU (the moment another instance may have it);
- dequeued:   the waiter's `queued -> starting` event (the dispatcher took the GPU);
- started:    Docker's own `State.StartedAt` of the waiter's container;
- running:    the waiter's `starting -> running` event.

All four are on this host's clock. Target: freed -> started at most 1 s
(p50). PASS/MISS is printed; the exit status is 0 either way (1 only when the benchmark
itself could not run).

    .venv/bin/python bench/queued_start.py [--runs 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# This file's folder first on the path would make it the standard library's `queue`.
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]

import docker  # noqa: E402

from tests.harness import BASE_IMAGE, Server, wait_status  # noqa: E402

MODEL = "A100-80GB"
TARGET_S = 1.0


def parse(at: str) -> datetime:
    """An API time or Docker's StartedAt (nanoseconds, 'Z') as an aware datetime."""
    at = at.replace("Z", "+00:00")
    head, dot, rest = at.partition(".")
    if dot:
        digits = "".join(c for c in rest if c.isdigit())
        at = f"{head}.{digits[:6]}{rest[len(digits):]}"
    return datetime.fromisoformat(at)


def event_at(api, instance_id: str, from_status: str, to_status: str) -> datetime:
    events = api.get(f"/instances/{instance_id}/events").json()
    return parse([e for e in events if e["from_status"] == from_status and e["to_status"] == to_status][-1]["at"])


def one_round(srv, api, engine, holder: str, waiter: str) -> dict[str, float]:
    queued = api.post(f"/instances/{waiter}/start", json={"queue": True}).json()
    assert queued["status"] == "queued", queued
    api.post(f"/instances/{holder}/stop").raise_for_status()
    wait_status(api, holder, "stopped")
    wait_status(api, waiter, "running", timeout=30)
    freed = event_at(api, holder, "stopping", "stopped")
    container = engine.containers.get(f"dy-{srv.deployment}-{waiter}")
    started = parse(container.attrs["State"]["StartedAt"])
    return {
        "dequeued": (event_at(api, waiter, "queued", "starting") - freed).total_seconds(),
        "started": (started - freed).total_seconds(),
        "running": (event_at(api, waiter, "starting", "running") - freed).total_seconds(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    engine = docker.from_env()
    srv = Server(simulated_gpus=f"{MODEL}:1").start()
    try:
        srv.add_user("ops", admin=True).post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
        api = srv.add_user("bench")
        ids = []
        for name in ("a", "b"):
            made = api.post("/instances", json={"image": "debian-12", "name": name, "gpu_model": MODEL,
                                                "gpu_count": 1, "queue": True}).json()
            ids.append(made["id"])
        wait_status(api, ids[0], "running")
        holder, waiter = ids
        api.post(f"/instances/{waiter}/stop").raise_for_status()  # it was queued behind a
        wait_status(api, waiter, "stopped")
        rounds = []
        for run in range(args.runs + 1):  # the first round is a warm-up: the waiter's first start
            result = one_round(srv, api, engine, holder, waiter)
            if run:
                rounds.append(result)
            holder, waiter = waiter, holder
    except Exception as exc:
        return srv.report_failure(exc)
    finally:
        srv.close()

    print(f"queued start, {args.runs} rounds (seconds after the GPU was freed):")
    print(f"{'':>10} {'p50':>7} {'p90':>7} {'max':>7}")
    for key in ("dequeued", "started", "running"):
        values = sorted(r[key] for r in rounds)
        p90 = values[max(0, -(-len(values) * 9 // 10) - 1)]
        print(f"{key:>10} {statistics.median(values):7.3f} {p90:7.3f} {values[-1]:7.3f}")
    p50 = statistics.median(r["started"] for r in rounds)
    print(f"target: freed -> container started <= {TARGET_S:.1f} s (p50): {'PASS' if p50 <= TARGET_S else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
