"""Billing against a real server and the real Docker engine: per-second
charges from the runtime events, storage-only when stopped, an empty wallet stops (never
releases), bad input posts nothing, and kill -9 during settlement changes no posting."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, text

from dockyard.core import billing as core
from tests.harness import BASE_IMAGE, DOCKYARD, Server, wait_status

PRICE = "3600"  # per GPU per hour: 1 currency unit (10,000 minor units) per second
PER_SECOND = 10_000


@pytest.fixture(scope="module")
def srv(docker_client):
    server = Server(settle_interval_s="1", settle_lag_s="0.5", storage_period_s="2", min_balance_minutes="0.05",
                    low_balance_threshold="0").start()
    server.admin = server.add_user("root-admin", admin=True)
    server.admin.post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
    server.alice = server.add_user("alice")
    server.bob = server.add_user("bob")
    server.admin.post("/billing/prices", json={"kind": "gpu", "model": "A100-80GB", "price": PRICE}).raise_for_status()
    yield server
    server.close()


def run_times(api, instance_id) -> list[tuple[datetime, datetime | None]]:
    """(running, stopped) pairs from the instance's events: what metering must charge."""
    runs, start = [], None
    for e in api.get(f"/instances/{instance_id}/events").json():
        at = datetime.fromisoformat(e["at"])
        if e["to_status"] == "running" and e["from_status"] != "running":
            start = at
        elif e["to_status"] in ("stopped", "failed", "released") and start is not None:
            runs.append((start, at))
            start = None
    return runs + ([(start, None)] if start else [])


def usage(api, instance_id, kind="usage") -> list[dict]:
    return [p for p in api.get("/billing/postings", params={"instance": instance_id, "kind": kind}).json()]


def wait_settled(api, instance_id, seconds_run: float, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        rows = usage(api, instance_id)
        if abs(sum(p["usage_us"] or 0 for p in rows) / 1e6 - seconds_run) < 1e-6:
            return rows
        assert time.monotonic() < deadline, (seconds_run, sum(p["usage_us"] or 0 for p in rows) / 1e6)
        time.sleep(0.3)


def expected_charge(runs, per_hour_minor: int) -> int:
    return sum(((b - a) // timedelta(microseconds=1)) * per_hour_minor // core.US_PER_HOUR for a, b in runs)


def test_an_instance_that_runs_n_seconds_is_charged_n_seconds(srv):
    srv.admin.post("/billing/credit", json={"user": "alice", "amount": "100000"}).raise_for_status()
    created = srv.alice.post("/instances", json={"image": "debian-12", "gpu_model": "A100-80GB", "gpu_count": 2})
    assert created.status_code == 201, created.text
    assert created.json()["price_per_hour"] == "7200.00"
    iid = created.json()["id"]
    wait_status(srv.alice, iid, "running")
    time.sleep(3)
    srv.alice.post(f"/instances/{iid}/stop").raise_for_status()
    wait_status(srv.alice, iid, "stopped")
    runs = run_times(srv.alice, iid)
    seconds_run = sum((b - a).total_seconds() for a, b in runs)
    assert seconds_run >= 3
    rows = wait_settled(srv.alice, iid, seconds_run)
    charged = sum(p["amount_minor"] for p in rows)
    assert charged == expected_charge(runs, 2 * 3600 * PER_SECOND)  # to the minor unit
    assert abs(charged - seconds_run * 2 * PER_SECOND) < 1
    # Windows are aligned minutes; the first starts at the running event, the last ends at the stop.
    assert min(datetime.fromisoformat(p["period_start"]) for p in rows) == runs[0][0]
    assert max(datetime.fromisoformat(p["period_end"]) for p in rows) == runs[0][1]
    shown = srv.alice.get(f"/instances/{iid}").json()
    assert float(shown["cost_so_far"]) >= charged / 10_000 - 0.01
    # Stopped: no more GPU time, only storage (here the default disk is within the free allowance).
    time.sleep(2.5)
    assert sum(p["amount_minor"] for p in usage(srv.alice, iid)) == charged
    report = srv.admin.get("/billing/ledger/verify").json()
    assert report["ok"], report["problems"]
    balance = json.loads(srv.cli("balance", "--json", token_of="alice", check=True).stdout)
    assert balance["balance_minor"] == 100000 * 10_000 - charged
    srv.alice.delete(f"/instances/{iid}").raise_for_status()


def test_a_stopped_instance_pays_only_storage(srv):
    srv.admin.post("/billing/prices", json={"kind": "disk", "price": "86400"}).raise_for_status()  # 1/s per GB
    try:
        created = srv.alice.post("/instances", json={"image": "debian-12", "gpu_model": "A100-80GB", "gpu_count": 1,
                                                     "data_disk_gb": 51}).json()  # 1 GB beyond the free 50
        iid = created["id"]
        wait_status(srv.alice, iid, "running")
        srv.alice.post(f"/instances/{iid}/stop").raise_for_status()
        wait_status(srv.alice, iid, "stopped")
        runs = run_times(srv.alice, iid)
        seconds_run = sum((b - a).total_seconds() for a, b in runs)
        gpu_charge = sum(p["amount_minor"] for p in wait_settled(srv.alice, iid, seconds_run))
        time.sleep(5)
        assert sum(p["amount_minor"] for p in usage(srv.alice, iid)) == gpu_charge  # no GPU time while stopped
        storage = usage(srv.alice, iid, "storage")
        stopped_at = runs[-1][1]
        after_stop = [p for p in storage if datetime.fromisoformat(p["period_start"]) >= stopped_at]
        assert after_stop, storage
        for p in storage:  # each storage period: 1 GB at 1 unit per second, to the minor unit
            seconds = p["usage_us"] / 1e6
            assert abs(p["amount_minor"] - seconds * PER_SECOND) <= 1
        keys = [p["key"] for p in storage]
        assert len(keys) == len(set(keys)) and all(k.startswith(f"storage:{iid}:") for k in keys)
        bill = srv.cli("bill", "--csv", token_of="alice", check=True).stdout
        assert "storage" in bill and "usage" in bill and bill.splitlines()[0].startswith("day,instance_id")
        srv.alice.delete(f"/instances/{iid}").raise_for_status()
    finally:
        srv.admin.post("/billing/prices", json={"kind": "disk", "price": "0"}).raise_for_status()
    report = srv.admin.get("/billing/ledger/verify").json()
    assert report["ok"], report["problems"]


def test_an_empty_wallet_stops_instances_and_keeps_their_data(srv, docker_client):
    bob = srv.bob
    refused = bob.post("/instances", json={"image": "debian-12", "gpu_model": "A100-80GB", "gpu_count": 1})
    assert refused.status_code == 402
    assert "3600.00 CNY/hour" in refused.json()["detail"] and "0.00 CNY" in refused.json()["detail"]
    assert refused.json()["field"] == "balance"
    # 15 s of running: time for a write on a loaded machine before the wallet is empty.
    srv.admin.post("/billing/credit", json={"user": "bob", "amount": "15"}).raise_for_status()
    created = bob.post("/instances", json={"image": "debian-12", "gpu_model": "A100-80GB", "gpu_count": 1})
    assert created.status_code == 201, created.text
    iid = created.json()["id"]
    wait_status(bob, iid, "running")
    out = bob.post(f"/instances/{iid}/exec", json={"command": ["sh", "-c", "echo precious > /root/data/keep"]})
    assert out.json()["exit_code"] == 0
    stopped = wait_status(bob, iid, "stopped", timeout=60)
    assert stopped["status"] == "stopped"  # stopped, never released
    causes = [e["cause"] for e in bob.get(f"/instances/{iid}/events").json()]
    assert any("credit limit" in c for c in causes), causes
    volume = f"dy-{srv.deployment}-{iid}-data"
    assert docker_client.volumes.get(volume)  # the data disk is kept
    deadline = time.monotonic() + 15
    while (balance := bob.get("/billing/balance").json())["balance_minor"] > 0 and time.monotonic() < deadline:
        time.sleep(0.3)  # the stopped run is settled a moment after its stop
    assert balance["balance_minor"] <= 0
    assert {n["kind"] for n in balance["notices"]} >= {"stopped", "low_balance"}
    again = bob.post(f"/instances/{iid}/start")
    assert again.status_code == 402 and "recharge" in again.json()["detail"]
    # A recharge lifts the refusal; the data is still there.
    srv.admin.post("/billing/credit", json={"user": "bob", "amount": "1000"}).raise_for_status()
    bob.post(f"/instances/{iid}/start").raise_for_status()
    wait_status(bob, iid, "running")
    out = bob.post(f"/instances/{iid}/exec", json={"command": ["cat", "/root/data/keep"]}).json()
    assert out["output"] == "precious\n"
    bob.delete(f"/instances/{iid}").raise_for_status()
    wait_status(bob, iid, "released")
    report = srv.admin.get("/billing/ledger/verify").json()
    assert report["ok"], report["problems"]


def test_bad_input_is_refused_and_posts_nothing(srv):
    admin = srv.admin
    before = len(admin.get("/billing/postings").json())
    future = (datetime.now(timezone.utc) + timedelta(days=3)).isoformat()
    past = (datetime.now(timezone.utc) - timedelta(days=1)).isoformat()
    cases = [
        ("/billing/credit", {"user": "alice", "amount": "-5"}, 400, "negative"),
        ("/billing/credit", {"user": "alice", "amount": "lots"}, 400, "not an amount"),
        ("/billing/credit", {"user": "alice", "amount": "0"}, 400, "more than zero"),
        ("/billing/credit", {"user": "mallory", "amount": "5"}, 404, "unknown user"),
        ("/billing/vouchers", {"user": "alice", "amount": "5", "expires_at": past}, 400, "in the past"),
        ("/billing/vouchers", {"user": "alice", "amount": "-5", "expires_at": future}, 400, "negative"),
        ("/billing/vouchers", {"user": "nobody", "amount": "5", "expires_at": future}, 404, "unknown user"),
        ("/billing/prices", {"kind": "gpu", "model": "H900", "price": "3"}, 400, "unknown GPU model"),
        ("/billing/prices", {"kind": "gpu", "model": "A100-80GB", "price": "x"}, 400, "not an amount"),
        ("/billing/prices", {"kind": "gpu", "model": "A100-80GB", "price": "3", "effective_from": past}, 400,
         "retroactively"),
    ]
    for path, body, status, words in cases:
        answer = admin.post(path, json=body)
        assert answer.status_code == status, (body, answer.text)
        assert words in answer.json()["detail"], (body, answer.json())
    assert srv.alice.post("/billing/credit", json={"user": "alice", "amount": "5"}).status_code == 403
    assert len(admin.get("/billing/postings").json()) == before
    result = srv.cli("admin", "credit", "--", "alice", "-3", token_of="root-admin")
    assert result.returncode != 0 and "negative" in result.stderr
    assert srv.cli("admin", "prices", "ls", "--json", token_of="root-admin", check=True).stdout.strip().startswith("[")
    assert "ledger verified" in srv.cli("admin", "ledger", "verify", token_of="root-admin", check=True).stdout


# ---- kill -9 during settlement -------------------------------------------------------------


def ledger_and_expectation(server: Server) -> tuple[dict, dict, list]:
    """The usage postings, and what an uninterrupted settlement of the same runs posts."""
    from dockyard.core.billing import PriceRow
    from dockyard.services.billing.prices import to_us

    engine = create_engine(server.env["DOCKYARD_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            prices = [PriceRow(r.kind, r.model, r.node, to_us(_utc(r.effective_from)), r.price, r.id)
                      for r in conn.execute(text("SELECT * FROM billing_prices"))]
            segments = list(conn.execute(text("SELECT * FROM billing_segments ORDER BY id")))
            posted = {r.key: r.amount for r in conn.execute(text("SELECT key, amount FROM billing_postings "
                                                                 "WHERE kind = 'usage'"))}
    finally:
        engine.dispose()
    expected = {}
    for s in segments:
        steps = core.price_steps(prices, "gpu", s.gpu_model, s.node)
        start, end = to_us(_utc(s.started_at)), to_us(_utc(s.ended_at))
        for w in core.windows(steps, s.gpu_count, start, start, end, closed=True):
            expected[f"usage:{s.id}:{w.key}"] = w.amount
    return posted, expected, segments


def _utc(value):
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def start_expecting_crash(server: Server, after_chunks: int) -> None:
    """Start the server so that it SIGKILLs itself in the middle of its first settlement."""
    server.env["DOCKYARD_BILLING_CRASH_AFTER_CHUNKS"] = str(after_chunks)
    log = open(server.home / "server.log", "ab")
    process = subprocess.Popen([DOCKYARD, "serve"], env=server.env, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert process.wait(60) == -9, server.log()
    finally:
        del server.env["DOCKYARD_BILLING_CRASH_AFTER_CHUNKS"]


def test_kill_9_during_settlement_gives_the_same_ledger(docker_client):
    server = Server(simulated_gpus="A100-80GB:4", settle_interval_s="1", settle_lag_s="3", settle_chunk="1").start()
    try:
        admin = server.add_user("ops", admin=True)
        admin.post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
        carol = server.add_user("carol")
        admin.post("/billing/prices", json={"kind": "gpu", "model": "A100-80GB", "price": "3600"}).raise_for_status()
        admin.post("/billing/credit", json={"user": "carol", "amount": "100000"}).raise_for_status()
        ids = [carol.post("/instances", json={"image": "debian-12", "gpu_model": "A100-80GB", "gpu_count": 1}).json()["id"]
               for _ in range(3)]
        for iid in ids:
            wait_status(carol, iid, "running")
        time.sleep(1.5)
        server.kill9()  # while running: maybe mid-cycle
        server.start()
        for iid in ids:
            carol.post(f"/instances/{iid}/stop").raise_for_status()
        for iid in ids:
            wait_status(carol, iid, "stopped")
        server.kill9()  # the stops are younger than the settle lag: not settled yet
        time.sleep(3.5)
        start_expecting_crash(server, after_chunks=1)  # dies after settling one run
        start_expecting_crash(server, after_chunks=1)  # and again, after the next
        server.start()
        deadline = time.monotonic() + 30
        while True:
            posted, expected, segments = ledger_and_expectation(server)
            if segments and all(s.done for s in segments) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert len(segments) >= 3 and all(s.done for s in segments)
        assert posted == expected  # exactly the postings of an uninterrupted settlement
        for iid in ids:  # and the runs are the ones the events record
            runs = run_times(carol, iid)
            mine = [s for s in segments if s.instance_id == iid]
            assert [(_utc(s.started_at), _utc(s.ended_at)) for s in mine] == runs
        report = admin.get("/billing/ledger/verify").json()
        assert report["ok"], report["problems"]
        assert "kill" in server.log() and "fault injection" in server.log()
    finally:
        server.close()


def test_saved_images_pay_storage_until_deleted(srv):
    srv.admin.post("/billing/prices", json={"kind": "image", "price": "86400"}).raise_for_status()  # 1/s per GB
    try:
        created = srv.bob.post("/instances", json={"image": "debian-12", "gpu_count": 0}).json()
        wait_status(srv.bob, created["id"], "running")
        assert srv.bob.post(f"/instances/{created['id']}/save", json={"name": "kept"}).status_code == 202
        deadline = time.monotonic() + 60
        while srv.bob.get("/images/kept:latest").json()["status"] != "ready":
            assert time.monotonic() < deadline
            time.sleep(0.3)
        size_gb = srv.bob.get("/images/kept:latest").json()["size_bytes"] / 2**30

        def image_postings():
            return [p for p in srv.bob.get("/billing/postings", params={"kind": "storage"}).json()
                    if p["key"].startswith("image-storage:")]

        deadline = time.monotonic() + 30
        while len(image_postings()) < 2:  # two 2-second storage periods
            assert time.monotonic() < deadline, image_postings()
            time.sleep(0.5)
        for p in image_postings():  # thousandths of a GB, at 1 unit per GB-second, to the minor unit
            seconds = p["usage_us"] / 1e6 if p["usage_us"] else 2
            assert p["amount_minor"] <= seconds * PER_SECOND * size_gb + 1 and p["amount_minor"] > 0
        srv.bob.delete(f"/instances/{created['id']}").raise_for_status()
        wait_status(srv.bob, created["id"], "released")
        assert srv.bob.delete("/images/kept:latest").status_code == 204
        time.sleep(5)
        settled = len(image_postings())
        time.sleep(5)
        assert len(image_postings()) == settled  # a deleted image costs nothing more
    finally:
        srv.admin.post("/billing/prices", json={"kind": "image", "price": "0"}).raise_for_status()
    report = srv.admin.get("/billing/ledger/verify").json()
    assert report["ok"], report["problems"]
