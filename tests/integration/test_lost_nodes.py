"""A node that vanishes and returns, on an engine of its own: after the grace period it
is offline and its instances lost, billed only until it was last seen; a release is
accepted at once; when it answers again its instances come back stopped, their
containers stopped before any GPU there is handed out again."""

import time
from datetime import datetime

import pytest

from tests.engines import VANISHING, clean_engine, engine, far_node_config, freeze, thaw
from tests.harness import BASE_IMAGE, Server, wait_status


@pytest.fixture
def far(docker_client):
    remote = engine(VANISHING, [BASE_IMAGE])
    srv = Server(simulated_gpus="RTX-4090:1", node_grace_s="3")
    (srv.home / "config.toml").write_text(far_node_config(VANISHING))
    srv.start()
    srv.admin = srv.add_user("ops", admin=True)
    srv.admin.post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
    srv.api = srv.add_user("hana")
    srv.remote = remote
    yield srv
    thaw(VANISHING)
    srv.close()
    clean_engine(remote)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def far_node(srv) -> dict:
    return next(n for n in srv.admin.get("/nodes").json() if n["name"] == "far")


def test_a_vanished_node_loses_its_instances_and_returns_them_stopped(far):
    api = far.api
    kept = api.post("/instances", json={"image": "debian-12", "gpu_model": "A100-80GB", "gpu_count": 1}).json()["id"]
    gone = api.post("/instances", json={"image": "debian-12", "gpu_model": "A100-80GB", "gpu_count": 1}).json()["id"]
    for key in (kept, gone):
        assert wait_status(api, key, "running")["node"] == "far"

    freeze(VANISHING)
    vanished = time.time()
    lost = wait_status(api, kept, "lost", timeout=30)
    assert lost["gpus"] == []
    event = api.get(f"/instances/{kept}/events").json()[-1]
    assert event["to_status"] == "lost" and "stopped answering" in event["cause"]
    # Dated when the node was last seen (a reconciler pass, at most a second before), not
    # when the grace period ran out.
    assert at(event["at"]).timestamp() <= vanished + 0.5
    assert far_node(far)["online"] is False
    market = {r["model"]: r for r in api.get("/gpus").json()}
    assert market["A100-80GB"]["free"] == 0 and market["A100-80GB"]["online"] is False
    refused = api.post("/instances", json={"image": "debian-12", "gpu_model": "A100-80GB", "gpu_count": 1})
    assert refused.status_code == 400 and "A100-80GB" in refused.json()["detail"], refused.json()
    assert any("stopped answering" in n["message"] for n in api.get("/notifications").json())
    started = next(e for e in api.get(f"/instances/{kept}/events").json() if e["to_status"] == "running")
    far.admin.post("/billing/settle").raise_for_status()
    time.sleep(2)
    far.admin.post("/billing/settle").raise_for_status()
    used = sum(p["usage_us"] or 0 for p in api.get("/billing/postings", params={"instance": kept}).json())
    assert used <= (at(event["at"]) - at(started["at"])).total_seconds() * 1e6 + 1

    released = api.delete(f"/instances/{gone}")  # accepted at once, finished when it returns
    assert released.status_code == 200 and released.json()["status"] == "releasing"
    assert api.post(f"/instances/{kept}/start").status_code == 409

    thaw(VANISHING)
    back = wait_status(api, kept, "stopped", timeout=30)
    assert "answers again" in api.get(f"/instances/{kept}/events").json()[-1]["cause"]
    assert wait_status(api, gone, "released", timeout=30)["status"] == "released"
    deadline = time.monotonic() + 15
    while not far_node(far)["online"]:
        assert time.monotonic() < deadline, far_node(far)
        time.sleep(0.3)
    container = far.remote.containers.get(f"dy-{far.deployment}-{kept}")
    assert container.status == "exited", "a lost instance's container kept running after the node came back"
    assert back["gpus"] == []
    api.post(f"/instances/{kept}/start").raise_for_status()
    assert wait_status(api, kept, "running")["node"] == "far"
