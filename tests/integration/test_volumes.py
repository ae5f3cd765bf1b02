"""Volumes against the real engine: data kept at release and mounted again, sizes that hold
(ENOSPC on that disk alone), resizes that keep every file, and others' volumes unseen."""

import re
import time
from datetime import datetime

import pytest

from tests.harness import BASE_IMAGE, Server, wait_status

GIB = 1024**3


def _make(api, **body) -> dict:
    response = api.post("/instances", json={"image": "debian-12", "gpu_count": 0, "data_disk_gb": 1, **body})
    assert response.status_code == 201, response.text
    return wait_status(api, response.json()["id"], "running")


def _sh(api, key: str, script: str) -> tuple[int, str]:
    out = api.post(f"/instances/{key}/exec", json={"command": ["sh", "-c", script]}).json()
    return out["exit_code"], out["output"]


def _df_size(api, key: str, path: str = "/root/data") -> int:
    code, out = _sh(api, key, f"df -B1 --output=size {path} | tail -1")
    assert code == 0, out
    return int(out.strip())


def _release(api, key: str, **params) -> dict:
    api.delete(f"/instances/{key}", params=params).raise_for_status()
    return wait_status(api, key, "released")


def test_release_keeps_the_data_disk_and_a_new_instance_mounts_it(server, docker_client):
    api = server.alice
    first = _make(api, name="keeper")
    assert first["keep_data_on_release"] is True
    assert _sh(api, first["id"], "echo precious > /root/data/hello.txt")[0] == 0
    assert _df_size(api, first["id"]) >= GIB  # a 1 GB data disk shows 1 GB
    released = _release(api, first["id"])
    events = api.get(f"/instances/{first['id']}/events").json()
    assert "data disk kept as a volume" in events[-1]["cause"]

    volume = api.get("/volumes/keeper").json()
    assert (volume["size_gb"], volume["source_instance"], volume["instance"]) == (1, "keeper", None)
    assert volume["node"] == released["node"]
    notices = api.get("/notifications").json()
    assert any("kept as volume keeper" in n["message"] for n in notices)

    second = _make(api, name="reader", volumes=["keeper"])
    assert second["volumes"] == ["keeper:/root/data"] and second["data_disk_gb"] == 0
    assert _sh(api, second["id"], "cat /root/data/hello.txt") == (0, "precious\n")
    assert api.get("/volumes/keeper").json()["instance"] == "reader"

    # In use: neither removed nor given to another instance, nor resized while running.
    refused = api.delete("/volumes/keeper")
    assert refused.status_code == 409 and "in use by instance reader" in refused.json()["detail"]
    taken = api.post("/instances", json={"image": "debian-12", "gpu_count": 0, "volumes": ["keeper:/mnt/k"]})
    assert taken.status_code == 409 and "in use by instance reader" in taken.json()["detail"]
    busy = api.post("/volumes/keeper/resize", json={"size_gb": 2})
    assert busy.status_code == 409 and "stop it first" in busy.json()["detail"]

    # The volume outlives this instance too, and goes only when removed.
    _release(api, second["id"], delete_data=True)  # its own disk: none; the volume stays
    assert api.get("/volumes/keeper").json()["instance"] is None
    ours = {"label": f"dockyard.deployment={server.deployment}"}  # other servers may share the engine
    engine_names = {v.name for v in docker_client.volumes.list(filters=ours)}
    gone = api.delete("/volumes/keeper")
    assert gone.status_code == 200 and gone.json()["status"] == "deleted"
    assert api.get("/volumes/keeper").status_code == 404
    left = {v.name for v in docker_client.volumes.list(filters=ours)}
    assert len(engine_names - left) == 1


def test_rm_keep_data_names_the_volume_and_delete_data_keeps_nothing(server):
    api = server.alice
    kept = _make(api, name="cli-kept")
    _sh(api, kept["id"], "echo 1 > /root/data/one")
    server.alice.post("/volumes", json={"name": "taken-name", "size_gb": 1}).raise_for_status()

    both = server.cli("rm", kept["id"], "--yes", "--keep-data", "x", "--delete-data", token_of="alice")
    assert both.returncode == 1 and "not both" in both.stderr
    clash = server.cli("rm", kept["id"], "--yes", "--keep-data", "taken-name", token_of="alice")
    assert clash.returncode == 1 and "already have a volume named 'taken-name'" in clash.stderr
    assert api.get(f"/instances/{kept['id']}").json()["status"] == "running"  # nothing changed

    done = server.cli("rm", kept["id"], "--yes", "--wait", "--keep-data", "my-results", token_of="alice")
    assert done.returncode == 0, done.stderr
    listed = server.cli("volumes", "ls", token_of="alice")
    assert "my-results" in listed.stdout and "cli-kept" not in listed.stdout

    dropped = _make(api, name="cli-dropped")
    before = {v["name"] for v in api.get("/volumes").json()}
    assert server.cli("rm", dropped["id"], "--yes", "--wait", "--delete-data", token_of="alice").returncode == 0
    assert {v["name"] for v in api.get("/volumes").json()} == before
    for name in ("my-results", "taken-name"):
        assert server.cli("volumes", "rm", name, "--yes", token_of="alice").returncode == 0


def test_a_1_gb_volume_refuses_the_next_bytes_and_nobody_else_notices(server):
    api = server.alice
    api.post("/volumes", json={"name": "small", "size_gb": 1}).raise_for_status()
    full = _make(api, name="filler", volumes=["small"])
    neighbour = _make(api, name="neighbour")
    size = _df_size(api, full["id"])
    assert GIB <= size < 1.05 * GIB

    code, out = _sh(api, full["id"], "dd if=/dev/zero of=/root/data/big bs=1M count=1126 conv=fsync 2>&1")
    assert code != 0 and "No space left on device" in out
    code, out = _sh(api, full["id"], "stat -c %s /root/data/big")
    assert int(out) < 1.1 * GIB

    # Another instance, its disks and the host write as before.
    assert _sh(api, neighbour["id"], "dd if=/dev/zero of=/root/data/f bs=1M count=20 conv=fsync 2>&1")[0] == 0
    assert _sh(api, neighbour["id"], "dd if=/dev/zero of=/root/f bs=1M count=20 conv=fsync 2>&1")[0] == 0
    probe = server.home / "host-probe"
    probe.write_bytes(b"x" * 20 * 1024 * 1024)
    assert probe.stat().st_size == 20 * 1024 * 1024
    # The image file takes what was written, never more than its size (it started sparse).
    images = list((server.home / "disks").glob("*.img"))
    assert images and all(img.stat().st_blocks * 512 < 1.1 * GIB for img in images)
    for key in (full["id"], neighbour["id"]):
        _release(api, key, delete_data=True)
    api.delete("/volumes/small").raise_for_status()


def _stop(api, key: str) -> None:
    api.post(f"/instances/{key}/stop").raise_for_status()
    wait_status(api, key, "stopped")


def _start(api, key: str) -> None:
    api.post(f"/instances/{key}/start").raise_for_status()
    wait_status(api, key, "running")


def test_resize_keeps_every_file_and_refuses_a_shrink_below_the_data(server):
    api = server.alice
    api.post("/volumes", json={"name": "growing", "size_gb": 1}).raise_for_status()
    user = _make(api, name="grower", volumes=["growing:/mnt/work"])
    sums = "cd /mnt/work && find . -type f | sort | xargs sha256sum"
    code, before = _sh(api, user["id"], "mkdir -p /mnt/work/d && for i in $(seq 1 50); do "
                       "head -c 100000 /dev/urandom > /mnt/work/d/$i; done; "
                       "head -c 600000000 /dev/urandom > /mnt/work/big; " + sums)
    assert code == 0 and before.count("\n") == 51
    running = api.post("/volumes/growing/resize", json={"size_gb": 2})
    assert running.status_code == 409 and "stop it first" in running.json()["detail"]
    _stop(api, user["id"])

    assert api.post("/volumes/growing/resize", json={"size_gb": 0}).status_code == 400
    assert api.post("/volumes/growing/resize", json={"size_gb": 10**9}).status_code == 400
    grown = server.cli("volumes", "resize", "growing", "3", token_of="alice")
    assert grown.returncode == 0, grown.stderr
    assert api.get("/volumes/growing").json()["size_gb"] == 3
    shrunk = api.post("/volumes/growing/resize", json={"size_gb": 2})  # above the 0.6 GB in it: fine
    assert shrunk.status_code == 200, shrunk.text
    _start(api, user["id"])
    assert _sh(api, user["id"], sums) == (0, before)
    assert 2 * GIB <= _df_size(api, user["id"], "/mnt/work") < 2.1 * GIB

    # 1.5 GB of data: a shrink to 1 GB is refused and changes nothing.
    assert _sh(api, user["id"], "head -c 900000000 /dev/zero > /mnt/work/more")[0] == 0
    code, with_more = _sh(api, user["id"], sums)
    _stop(api, user["id"])
    below = server.cli("volumes", "resize", "growing", "1", token_of="alice")
    assert below.returncode == 1 and "cannot shrink to 1 GB" in below.stderr, below.stderr
    shown = api.get("/volumes/growing").json()
    assert (shown["size_gb"], shown["status"]) == (2, "ready") and shown["used_bytes"] > 1.4 * GIB
    _start(api, user["id"])
    assert _sh(api, user["id"], sums) == (0, with_more)
    _release(api, user["id"], delete_data=True)
    api.delete("/volumes/growing").raise_for_status()


def test_others_volumes_answer_404(server):
    alice, bob = server.alice, server.bob
    made = alice.post("/volumes", json={"name": "private", "size_gb": 1})
    assert made.status_code == 201, made.text
    vid = made.json()["id"]
    for key in (vid, "private"):
        assert bob.get(f"/volumes/{key}").status_code == 404
        assert bob.delete(f"/volumes/{key}").status_code == 404
        assert bob.post(f"/volumes/{key}/resize", json={"size_gb": 2}).status_code == 404
    assert "private" not in {v["name"] for v in bob.get("/volumes").json()}
    stolen = bob.post("/instances", json={"image": "debian-12", "gpu_count": 0, "volumes": ["private"]})
    assert stolen.status_code == 404 and "private" in stolen.json()["detail"]
    # Bob may have a volume of the same name: names are per user.
    assert bob.post("/volumes", json={"name": "private", "size_gb": 1}).status_code == 201
    bob.delete("/volumes/private").raise_for_status()
    alice.delete(f"/volumes/{vid}").raise_for_status()


def test_bad_input_lines_and_nothing_changed(server):
    cli = server.cli
    before = server.alice.get("/volumes").json()
    for args, words in (
        (("volumes", "create", "v", "--size", "0"), "size_gb"),
        (("volumes", "create", "v", "--size", "-3"), "size_gb"),
        (("volumes", "create", "v", "--size", str(10**9)), "size_gb"),
        (("volumes", "create", "bad name", "--size", "1"), "name"),
        (("volumes", "create", "v", "--size", "1", "--node", "nowhere"), "nowhere"),
        (("volumes", "show", "nosuch"), "not found"),
        (("volumes", "rm", "nosuch", "--yes"), "not found"),
        (("volumes", "resize", "nosuch", "2"), "not found"),
        (("create", "-i", "debian-12", "-g", "0", "--volume", "nosuch"), "volume 'nosuch' not found"),
        (("create", "-i", "debian-12", "-g", "0", "--volume", "x:relative"), "absolute"),
        (("create", "-i", "debian-12", "-g", "0", "--volume", "x:/etc"), "system directory"),
        (("create", "-i", "debian-12", "-g", "0", "--auto-release-days", "0"), "auto_release_days"),
        (("create", "-i", "debian-12", "-g", "0", "--auto-release-days", "999"), "auto_release_days"),
    ):
        result = cli(*args, token_of="alice")
        assert result.returncode != 0, args
        assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
    assert server.alice.post("/volumes", json={"name": "dup", "size_gb": 1}).status_code == 201
    dup = cli("volumes", "create", "dup", "--size", "1", token_of="alice")
    assert dup.returncode == 1 and "already have a volume named 'dup'" in dup.stderr
    server.alice.delete("/volumes/dup").raise_for_status()
    assert server.alice.get("/volumes").json() == before
    assert not [i for i in server.alice.get("/instances").json() if i["status"] == "creating"]


DAY_S = 3.0  # one auto-release "day" on this server


@pytest.fixture(scope="module")
def quick_days(docker_client):
    srv = Server(auto_release_days="4", autorelease_day_s=str(DAY_S), autorelease_interval_s="0.3").start()
    srv.add_user("ops", admin=True).post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
    srv.api = srv.add_user("dora")
    yield srv
    srv.close()


def test_auto_release_warns_on_days_1_and_3_releases_on_day_4_and_keeps_the_data(quick_days):
    api = quick_days.api
    made = _make(api, name="forgotten")
    assert _sh(api, made["id"], "echo still-here > /root/data/notes.txt")[0] == 0
    api.post(f"/instances/{made['id']}/stop").raise_for_status()
    wait_status(api, made["id"], "stopped")
    released = wait_status(api, made["id"], "released", timeout=90)
    events = api.get(f"/instances/{made['id']}/events").json()
    stopped_at = datetime.fromisoformat(next(e["at"] for e in events if e["to_status"] == "stopped"))
    release = next(e for e in events if e["to_status"] == "releasing")
    assert "released after 4 days stopped (auto-release)" in release["cause"]
    assert (datetime.fromisoformat(release["at"]) - stopped_at).total_seconds() >= 4 * DAY_S

    notices = sorted((n for n in api.get("/notifications").json() if n["kind"] == "release"), key=lambda n: n["id"])
    assert len(notices) == 3, notices
    offsets = [(datetime.fromisoformat(n["at"]) - stopped_at).total_seconds() / DAY_S for n in notices]
    assert 1 <= offsets[0] < 3 <= offsets[1] < 4 <= offsets[2], offsets
    assert "released in 3.0 days" in notices[0]["message"] or "released in 2." in notices[0]["message"]
    assert "kept as a volume" in notices[1]["message"]

    volume = api.get("/volumes/forgotten").json()
    assert volume["source_instance"] == "forgotten" and volume["node"] == released["node"]
    again = _make(api, name="remembered", volumes=["forgotten"])
    assert _sh(api, again["id"], "cat /root/data/notes.txt") == (0, "still-here\n")
    # A running instance is never released, however long ago it last stopped.
    time.sleep(5 * DAY_S)
    assert api.get(f"/instances/{again['id']}").json()["status"] == "running"


def test_release_policy_changes_by_patch_within_the_operators_limit(server):
    api = server.alice
    made = api.post("/instances", json={"image": "debian-12", "gpu_count": 0, "name": "policy"}).json()
    changed = api.patch(f"/instances/{made['id']}", json={"keep_data_on_release": False, "auto_release_days": 3})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["keep_data_on_release"], changed.json()["auto_release_days"]) == (False, 3)
    too_long = api.patch(f"/instances/{made['id']}", json={"auto_release_days": 16})
    assert too_long.status_code == 400 and "auto_release_days: 1 to 15" in too_long.json()["detail"]
    assert api.get(f"/instances/{made['id']}").json()["auto_release_days"] == 3
    wait_status(api, made["id"], "running")
    before = {v["name"] for v in api.get("/volumes").json()}
    _release(api, made["id"])  # its choice: the data disk goes with it
    assert {v["name"] for v in api.get("/volumes").json()} == before


@pytest.fixture(scope="module")
def small_system_disks():
    srv = Server(system_disk_gb="1", metrics_interval_s="1", metrics_disk_interval_s="1",
                 autostop_interval_s="0.5").start()
    srv.add_user("ops", admin=True).post("/images", json={"ref": BASE_IMAGE, "name": "debian-12"}).raise_for_status()
    srv.api = srv.add_user("erin")
    yield srv
    srv.close()


def test_a_system_disk_over_its_limit_stops_its_instance_and_the_data_disk_does_not_count(small_system_disks):
    """This engine (overlay2 on ext4) cannot hold a container's layer to a size, so the
    written bytes are measured and the instance stopped past the limit; its disks are kept."""
    api = small_system_disks.api
    made = _make(api, name="filler", data_disk_gb=2)
    key = made["id"]
    assert _sh(api, key, "head -c 1200M /dev/zero > /root/data/big && echo ok") == (0, "ok\n")
    deadline = time.monotonic() + 60
    while (system := api.get(f"/instances/{key}/metrics").json()["system_disk"]) is None:
        assert time.monotonic() < deadline, "no system disk reading"
        time.sleep(0.5)
    assert system["used"] < 100 * 1024**2 and system["total"] == GIB  # the data disk's bytes are not its
    time.sleep(3)
    assert api.get(f"/instances/{key}").json()["status"] == "running"

    # In the background: the stop may come before the write ends, and kills it.
    writer = "nohup sh -c 'head -c 1200M /dev/zero > /root/big' >/dev/null 2>&1 & echo ok"
    assert _sh(api, key, writer) == (0, "ok\n")
    wait_status(api, key, "stopped", timeout=90)
    cause = next(e["cause"] for e in reversed(api.get(f"/instances/{key}/events").json())
                 if e["to_status"] == "stopping")
    # Read while the write goes on: anything past the limit (1 GiB) stops it.
    assert re.search(r"its system disk holds 1\.[0-2] GB written, over the 1 GB limit", cause), cause
    assert any("system disk holds" in n["message"] for n in api.get("/notifications").json())
    # Kept: started again, the user finds the file and can delete it.
    api.post(f"/instances/{key}/start").raise_for_status()
    wait_status(api, key, "running")
    code, sizes = _sh(api, key, "stat -c %s /root/big /root/data/big")
    written, data = map(int, sizes.split())
    assert code == 0 and data == 1200 * 1024**2
    assert GIB - 100 * 1024**2 <= written <= 1200 * 1024**2  # past the limit when read, less what else was written
