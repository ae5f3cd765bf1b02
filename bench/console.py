"""The web console under load: page times and live-status latency.

Starts a real `dockyard serve` (tests/harness.py), seeds 100 users and 1,000 instances
directly in its database (rows only, no containers: status `stopped`, 1 x A100-80GB each;
one user, `heavy`, owns 200 of them, the 99 others 8 each) plus a GPU price, signs in
through the console's own /login, then measures:

1. GET /instances for a typical user (8 instances) and for `heavy` (200), and GET /market,
   N times each after warm-ups (wall time of the whole HTTP request, httpx on the same host);
2. status change -> open SSE stream: a GET /events stream is held open while the user
   releases one of their instances through the console (POST /console/instances/ID/release);
   the time from just before the POST to the moment the stream delivers that instance's new
   status, N times.

Targets: pages < 300 ms, a status change on an open page < 1 s.

    cd /work/main && .venv/bin/python bench/console.py [--runs 30]
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import BASE_IMAGE, Server  # noqa: E402

from dockyard.db.models import Image, Instance, InstanceEvent, User  # noqa: E402
from dockyard.db.session import make_engine, make_session_factory  # noqa: E402
from dockyard.services import users  # noqa: E402
from dockyard.services.billing import ledger, prices  # noqa: E402

PASSWORD = "bench-password"


def seed(url: str, n_users: int, n_instances: int, heavy: int) -> None:
    sessions = make_session_factory(make_engine(url))
    with sessions.begin() as db:
        first = users.create_user(db, "heavy", PASSWORD)
        db.flush()
        hashed = first.password_hash  # one argon2 hash for all: seeding, not security
        others = [User(name=f"user{k:03d}", password_hash=hashed) for k in range(1, n_users)]
        db.add_all(others)
        db.flush()
        image_id = db.query(Image.id).filter(Image.name == "debian-12").scalar()
        owners = [first.id] * heavy
        rest = n_instances - heavy
        owners += [others[k % len(others)].id for k in range(rest)]
        for k, owner in enumerate(owners):
            iid = secrets.token_hex(6)
            db.add(Instance(id=iid, owner_id=owner, name=f"i{k:04d}", node_name="local", image_id=image_id,
                            gpu_model="A100-80GB", gpu_count=1, status="stopped", env={}, data_disk_gb=50))
            db.add(InstanceEvent(instance_id=iid, from_status=None, to_status="stopped", cause="seeded"))
        prices.set_price(db, "gpu", "2.5", "A100-80GB", by="bench")
        ledger.recharge(db, "heavy", "1000", by="bench")
        ledger.recharge(db, "user001", "1000", by="bench")


def sign_in(base: str, name: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=base, timeout=30, follow_redirects=False)
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    assert client.post("/login", data={"user": name, "password": PASSWORD, "csrf": token}).status_code == 303
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/instances").text).group(1)
    return client, csrf


def timed(client: httpx.Client, path: str, runs: int) -> list[float]:
    for _ in range(3):
        assert client.get(path).status_code == 200
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(path)
        out.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text[:300]
    return out


def sse_latency(client: httpx.Client, csrf: str, base: str, runs: int) -> list[float]:
    page = client.get("/instances").text
    ids = re.findall(r'<tr class="instance" data-id="([0-9a-f]+)"', page)[:runs]
    seen: dict[str, float] = {}
    ready = threading.Event()
    stop = threading.Event()

    def listen() -> None:
        try:
            _listen()
        except httpx.HTTPError:
            pass  # the server went away at the end

    def _listen() -> None:
        with httpx.Client(base_url=base, cookies=client.cookies, timeout=None) as sse:
            with sse.stream("GET", "/events", headers={"Accept": "text/event-stream"}) as stream:
                for line in stream.iter_lines():
                    if line.startswith("retry"):
                        ready.set()
                    if line.startswith("data: "):
                        data = json.loads(line[6:])
                        if "id" in data:  # instance and gone events (not the notices count)
                            seen.setdefault(data["id"], time.perf_counter())
                    if stop.is_set():
                        return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert ready.wait(10), "the SSE stream did not open"
    out = []
    for iid in ids:
        started = time.perf_counter()
        response = client.post(f"/console/instances/{iid}/release", headers={"X-CSRF-Token": csrf})
        assert response.status_code == 200, response.text
        deadline = time.monotonic() + 5
        while iid not in seen and time.monotonic() < deadline:
            time.sleep(0.005)
        assert iid in seen, f"no event for {iid}"
        out.append((seen[iid] - started) * 1000)
        time.sleep(0.2)
    stop.set()
    return out


def summary(name: str, values: list[float], target: float) -> str:
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
    verdict = "PASS" if p95 < target else "MISS"
    return (f"{name:<42} median {statistics.median(values):7.1f} ms  p95 {p95:7.1f} ms  "
            f"max {values[-1]:7.1f} ms  (target < {target:.0f} ms: {verdict})")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    srv = Server(settle_interval_s="60").start()
    try:
        admin = srv.add_user("ops", admin=True)
        admin.post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
        started = time.perf_counter()
        seed(srv.env["DOCKYARD_DATABASE_URL"], 100, 1000, 200)
        print(f"seeded 100 users and 1,000 instances in {time.perf_counter() - started:.1f} s")
        typical, _ = sign_in(srv.url, "user001")
        heavy, csrf = sign_in(srv.url, "heavy")
        lines = [
            summary("GET /instances (user with 8 instances)", timed(typical, "/instances", args.runs), 300),
            summary("GET /instances (user with 200 instances)", timed(heavy, "/instances", args.runs), 300),
            summary("GET /market", timed(typical, "/market", args.runs), 300),
            summary("status change -> open SSE stream", sse_latency(heavy, csrf, srv.url, min(args.runs, 20)), 1000),
        ]
        print("\n".join(lines))
    finally:
        srv.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
