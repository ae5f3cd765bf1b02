"""Monitoring against a real server and the real Docker engine: a sampler every second,
real CPU and memory numbers, the data disk, an advisor finding, owner-only access, and no
samples while stopped."""

import json
import time

import pytest

from tests.harness import BASE_IMAGE, Server, wait_status

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]
MIB = 2**20


@pytest.fixture(scope="module")
def srv(docker_client):
    # A small memory share for GPU-less instances, so that filling most of it is cheap.
    server = Server(metrics_interval_s="1", metrics_disk_interval_s="2", no_gpu_memory_gb="0.25").start()
    admin = server.add_user("ops", admin=True)
    admin.post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
    server.admin, server.alice, server.bob = admin, server.add_user("alice"), server.add_user("bob")
    yield server
    server.close()


def create(api, **body) -> dict:
    response = api.post("/instances", json={"image": "debian-12", **body})
    assert response.status_code == 201, response.text
    return wait_status(api, response.json()["id"], "running")


def metrics_when(api, key: str, ready, timeout: float = 40) -> dict:
    """The metrics view once `ready(view)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        view = api.get(f"/instances/{key}/metrics")
        assert view.status_code == 200, view.text
        view = view.json()
        if ready(view) or time.monotonic() > deadline:
            return view
        time.sleep(0.5)


def cpu_values(view: dict) -> list[float]:
    return [s["cpu_percent"] for s in view["samples"] if s["cpu_percent"] is not None]


def exec_(api, key: str, script: str) -> None:
    result = api.post(f"/instances/{key}/exec", json={"command": ["sh", "-c", script]}).json()
    assert result["exit_code"] == 0, result


@pytest.fixture(scope="module")
def pair(srv):
    busy = create(srv.alice, name="busy", gpu_model="A100-80GB", gpu_count=1, command="while :; do :; done")
    idle = create(srv.alice, name="idle", gpu_count=0)
    return busy, idle


def test_a_busy_instance_shows_its_cpu_and_an_idle_one_does_not(srv, pair):
    busy, idle = pair
    busy_view = metrics_when(srv.alice, busy["id"], lambda v: len(cpu_values(v)) >= 4)
    idle_view = metrics_when(srv.alice, idle["id"], lambda v: len(cpu_values(v)) >= 4)
    busy_cpu, idle_cpu = cpu_values(busy_view)[-3:], cpu_values(idle_view)[-3:]
    assert len(busy_cpu) == len(idle_cpu) == 3, (busy_view, idle_view)
    assert sorted(busy_cpu)[1] > 50, busy_cpu  # a busy loop fills its share (1/6 of the host here)
    assert max(idle_cpu) < 10, idle_cpu
    assert busy_view["interval_s"] == 1 and busy_view["status"] == "running"

    # Memory: real numbers below the limit; the GPU-less one's limit is its small share.
    for view in (busy_view, idle_view):
        latest = view["samples"][-1]
        assert 0 < latest["memory_used"] < latest["memory_limit"]
    assert idle_view["samples"][-1]["memory_limit"] == 256 * MIB

    # A simulated GPU is listed, with no utilisation: never a made-up number.
    assert [(g["model"], g["simulated"]) for g in busy_view["gpus"]] == [("A100-80GB", True)]
    assert all(g["util_percent"] is None and g["memory_used"] is None
               for s in busy_view["samples"] for g in s["gpus"])
    assert busy_view["samples"][-1]["gpus"][0]["uuid"] == busy_view["gpus"][0]["uuid"]
    assert idle_view["gpus"] == [] and all(s["gpus"] == [] for s in idle_view["samples"])

    # The CLI prints the latest values through the API.
    shown = srv.cli("metrics", "busy", token_of="alice")
    assert shown.returncode == 0, shown.stderr
    assert "of its share" in shown.stdout and "A100-80GB: simulated, no data" in shown.stdout
    as_json = json.loads(srv.cli("metrics", "idle", "--json", token_of="alice", check=True).stdout)
    assert as_json["id"] == idle["id"] and as_json["samples"]


def test_memory_near_the_limit_is_a_finding_and_the_data_disk_is_measured(srv, pair):
    _, idle = pair
    before = metrics_when(srv.alice, idle["id"], lambda v: v["samples"])["samples"][-1]["memory_used"]
    # tmpfs pages count against the container's memory and the kernel cannot drop them.
    exec_(srv.alice, idle["id"], "dd if=/dev/zero of=/dev/shm/fill bs=1M count=236 2>/dev/null; "
                                 "head -c 20000000 /dev/zero > /root/data/blob")
    view = metrics_when(srv.alice, idle["id"], lambda v: any(f["rule"] == "memory_high" for f in v["findings"])
                        and v["disk"] and v["disk"]["used"] >= 20_000_000)
    finding = next(f for f in view["findings"] if f["rule"] == "memory_high")
    assert finding["severity"] == "warning" and "OOM" in finding["message"] and finding["action"]
    assert view["samples"][-1]["memory_used"] - before > 200 * MIB
    assert 20_000_000 <= view["disk"]["used"] < view["disk"]["total"] <= 50 * 2**30

    exec_(srv.alice, idle["id"], "rm /dev/shm/fill")
    view = metrics_when(srv.alice, idle["id"], lambda v: not v["findings"])
    assert view["findings"] == [], view["findings"]


def test_only_the_owner_sees_the_metrics(srv, pair):
    busy, _ = pair
    for caller in (srv.bob, srv.admin):
        for key in (busy["id"], "busy"):
            assert caller.get(f"/instances/{key}/metrics").status_code == 404
    assert srv.client().get(f"/instances/{busy['id']}/metrics").status_code == 401


def test_a_stopped_instance_gets_no_new_samples(srv, pair):
    busy, _ = pair
    assert srv.alice.post(f"/instances/{busy['id']}/stop").status_code == 200
    wait_status(srv.alice, busy["id"], "stopped")
    time.sleep(1.5)  # a round that began before the stop may still land
    before = srv.alice.get(f"/instances/{busy['id']}/metrics").json()
    time.sleep(3)  # three sampler intervals
    after = srv.alice.get(f"/instances/{busy['id']}/metrics").json()
    assert after["status"] == "stopped" and after["samples"], after
    assert after["samples"] == before["samples"]  # the last hour stays, nothing new
