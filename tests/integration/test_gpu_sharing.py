"""Shares of one GPU on the real Docker engine with simulated GPUs: two halves share one
GPU and a third goes to another, a share is billed at its part of the price, a release
frees its part, the database refuses a slot held twice, and bad shares change nothing."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from tests.harness import BASE_IMAGE, Server, wait_status

PRICE = "3600"  # per GPU-hour: one currency unit (10,000 minor units) per second
GPU_MEMORY_MB = 24564  # a simulated RTX-4090


@pytest.fixture(scope="module")
def shared(docker_client):
    server = Server(simulated_gpus="RTX-4090:2", gpu_sharing="mps:2", settle_interval_s="1",
                    settle_lag_s="0.5", min_balance_minutes="0.05", low_balance_threshold="0").start()
    server.admin = server.add_user("root-admin", admin=True)
    server.admin.post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
    server.admin.post("/billing/prices", json={"kind": "gpu", "model": "RTX-4090", "price": PRICE}).raise_for_status()
    server.alice = server.add_user("alice")
    server.admin.post("/billing/credit", json={"user": "alice", "amount": "100000"}).raise_for_status()
    yield server
    server.close()


def market_row(server) -> dict:
    (row,) = server.alice.get("/gpus").json()
    return row


def share_free(row: dict, share: str) -> int:
    return next(s["free"] for s in row["shares"] if s["share"] == share)


def create(api, **body) -> dict:
    answer = api.post("/instances", json={"image": "debian-12", **body})
    assert answer.status_code == 201, answer.text
    return answer.json()


def release(api, instance_id: str) -> None:
    api.delete(f"/instances/{instance_id}").raise_for_status()
    wait_status(api, instance_id, "released")


def usage_charged(api, instance_id: str, seconds_run: float, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while True:
        rows = api.get("/billing/postings", params={"instance": instance_id, "kind": "usage"}).json()
        if abs(sum(p["usage_us"] or 0 for p in rows) / 1e6 - seconds_run) < 1e-6:
            return sum(p["amount_minor"] for p in rows)
        assert time.monotonic() < deadline, rows
        time.sleep(0.3)


def run_seconds(api, instance_id: str) -> tuple[float, int]:
    """Seconds between the running and the stopped event, and their microseconds."""
    events = api.get(f"/instances/{instance_id}/events").json()
    start = next(e["at"] for e in events if e["to_status"] == "running")
    end = next(e["at"] for e in events if e["to_status"] == "stopped")
    from datetime import datetime
    span = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    return span.total_seconds(), span // timedelta(microseconds=1)


def test_market_offers_halves_with_what_mps_isolates(shared):
    row = market_row(shared)
    assert (row["model"], row["total"], row["free"], row["sharing"]) == ("RTX-4090", 2, 2, "mps")
    assert row["shares"] == [{"share": "0.5", "gpu_fraction": 0.5, "free": 4}]
    assert "memory" in row["isolation"] and "not faults" in row["isolation"]
    listing = shared.cli("gpus", token_of="alice", check=True).stdout
    assert "0.5 (4)" in listing and "mps isolates memory" in listing


def test_two_halves_share_a_gpu_a_third_goes_elsewhere_half_price_and_release_frees(shared, docker_client):
    first = create(shared.alice, gpu_share="0.5", name="half-1")
    assert first["gpu_share"] == "0.5" and first["price_per_hour"] == "1800.00"  # half the GPU's price
    second = create(shared.alice, gpu_share="0.5", name="half-2")
    third = create(shared.alice, gpu_share="0.5", name="half-3")
    gpus = {}
    for instance in (first, second, third):
        shown = wait_status(shared.alice, instance["id"], "running")
        (gpu,) = shown["gpus"]
        gpus[instance["name"]] = gpu["uuid"]
    assert gpus["half-1"] == gpus["half-2"] != gpus["half-3"]

    # In the container: its GPU, its part and its memory (simulated: no MPS daemon).
    out = shared.alice.post(f"/instances/{first['id']}/exec", json={"command": [
        "sh", "-c", "echo $NVIDIA_VISIBLE_DEVICES $DOCKYARD_GPU_SHARE $DOCKYARD_GPU_MEMORY_MB"]}).json()
    assert out["output"].split() == [gpus["half-1"], "0.5", str(GPU_MEMORY_MB // 2)]
    label = {"label": f"dockyard.deployment={shared.deployment}"}
    assert not [c for c in docker_client.containers.list(all=True, filters=label) if "dockyard.mps" in c.labels]

    row = market_row(shared)
    assert (row["free"], share_free(row, "0.5")) == (0, 1)
    # The GPU with one half left is not free whole.
    whole = shared.alice.post("/instances", json={"image": "debian-12", "gpu_count": 1})
    assert whole.status_code == 409 and "not enough free" in whole.json()["detail"]

    # The database itself refuses a held slot, or a slot under another GPU's name.
    engine = create_engine(shared.env["DOCKYARD_DATABASE_URL"])
    with engine.connect() as db:
        slot, gpu_id = db.execute(text("SELECT slot_id, gpu_id FROM gpu_assignments WHERE instance_id = :i"),
                                  {"i": first["id"]}).one()
        other_gpu = db.execute(text("SELECT id FROM gpus WHERE id != :g"), {"g": gpu_id}).scalar()
        free_slot = db.execute(text("SELECT id FROM gpu_slots WHERE gpu_id = :g AND id NOT IN "
                                    "(SELECT slot_id FROM gpu_assignments)"), {"g": gpu_id}).scalar()
    for slot_id, gpu in ((slot, gpu_id), (free_slot, other_gpu)):
        if slot_id is None:
            continue
        with pytest.raises(IntegrityError):
            with engine.begin() as db:
                if engine.dialect.name == "sqlite":
                    db.exec_driver_sql("PRAGMA foreign_keys=ON")
                db.execute(text("INSERT INTO gpu_assignments (slot_id, gpu_id, instance_id, assigned_at) "
                                "VALUES (:s, :g, :i, CURRENT_TIMESTAMP)"), {"s": slot_id, "g": gpu, "i": third["id"]})
    engine.dispose()

    # Billing: a half pays half the GPU's price, to the minor unit.
    time.sleep(2)
    shared.alice.post(f"/instances/{first['id']}/stop").raise_for_status()
    wait_status(shared.alice, first["id"], "stopped")
    seconds, micros = run_seconds(shared.alice, first["id"])
    charged = usage_charged(shared.alice, first["id"], seconds)
    assert charged == micros * 3600 * 10_000 * 500 // (3600 * 10**6 * 1000)
    assert abs(charged - seconds * 5_000) < 1  # half of one unit per second

    # Stopping and releasing free the shares: the first GPU is whole again.
    release(shared.alice, second["id"])
    row = market_row(shared)
    assert (row["free"], share_free(row, "0.5")) == (1, 3)
    taken = create(shared.alice, gpu_count=1, name="whole")
    assert wait_status(shared.alice, taken["id"], "running")["gpus"][0]["uuid"] == gpus["half-1"]
    # Its old GPU held whole, the stopped half starts on the other half of the third's GPU;
    # then nothing is left, and a start says so.
    shared.alice.post(f"/instances/{first['id']}/start", json={}).raise_for_status()
    assert wait_status(shared.alice, first["id"], "running")["gpus"][0]["uuid"] == gpus["half-3"]
    assert (market_row(shared)["free"], share_free(market_row(shared), "0.5")) == (0, 0)
    shared.alice.post(f"/instances/{first['id']}/stop").raise_for_status()
    wait_status(shared.alice, first["id"], "stopped")
    extra = create(shared.alice, gpu_share="0.5", name="half-4")
    refused = shared.alice.post(f"/instances/{first['id']}/start", json={})
    assert refused.status_code == 409 and "no free share of 0.5" in refused.json()["detail"]
    for instance in (first, third, taken, extra):
        release(shared.alice, instance["id"])
    assert market_row(shared)["free"] == 2
    report = shared.admin.get("/billing/ledger/verify").json()
    assert report["ok"], report["problems"]


@pytest.mark.parametrize("body, words", [
    ({"gpu_share": "0.25"}, ["gpu_share", "0.25 is not a share offered", "offered: 0.5"]),
    ({"gpu_share": "1g.18gb"}, ["gpu_share", "MIG profile 1g.18gb is on no GPU", "offered: 0.5"]),
    ({"gpu_share": "0.5", "gpu_count": 2}, ["gpu_count", "a share is part of one GPU"]),
    ({"gpu_share": "1.5"}, ["gpu_share", "less than one GPU"]),
    ({"gpu_share": "lots"}, ["gpu_share", "'lots' is not a share"]),
    ({"gpu_share": "0.5", "gpu_model": "H900"}, ["gpu_model", "H900"]),
])
def test_bad_shares_are_refused_and_change_nothing(shared, body, words):
    before = market_row(shared)
    answer = shared.alice.post("/instances", json={"image": "debian-12", **body})
    assert answer.status_code == 400, answer.text
    assert all(w in answer.json()["detail"] for w in words), answer.json()["detail"]
    assert [i for i in shared.alice.get("/instances").json() if i["status"] != "released"] == []
    assert market_row(shared) == before


def test_cli_names_a_bad_share_in_one_line(shared):
    result = shared.cli("create", "--image", "debian-12", "--gpus", "0.25", token_of="alice")
    assert result.returncode == 1
    assert result.stderr.startswith("error: gpu_share: 0.25 is not a share offered")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_share_on_a_platform_without_sharing_is_refused(server):
    answer = server.alice.post("/instances", json={"image": "debian-12", "gpu_share": "0.5"})
    assert answer.status_code == 400
    assert "no node shares its GPUs" in answer.json()["detail"]
    assert all(r["shares"] == [] and r["sharing"] is None for r in server.alice.get("/gpus").json())
    result = server.cli("create", "--image", "debian-12", "--gpus", "0.5", token_of="alice")
    assert result.returncode == 1 and "gpu_share: 0.5 asked, but no node shares its GPUs" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert [i for i in server.alice.get("/instances").json() if i["status"] != "released"] == []
