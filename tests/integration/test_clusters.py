"""Clusters on one Docker engine: a 2-member torchrun job (gloo) over the
cluster's private network, stop/start/release of all members together, all-or-nothing
placement, bad input; and a single instance's defaults for DDP."""

import base64
import json
import re
import threading
from pathlib import Path

import pytest

from tests.harness import Server, wait_status

IMAGE = "pytorch-2.13-cpu"
SCRIPT = Path(__file__).resolve().parents[2] / "docs/examples/train_ddp.py"
TORCHRUN = ("torchrun --nnodes=$NNODES --node_rank=$NODE_RANK --master_addr=$MASTER_ADDR "
            "--master_port=$MASTER_PORT --nproc_per_node=$NPROC_PER_NODE /root/train_ddp.py --backend gloo")


@pytest.fixture(scope="module")
def srv(docker_client, pytorch_image):
    # 6 GPUs of 1 CPU each on a small test host: CPUs over-committed on purpose
    server = Server(simulated_gpus="A100-80GB:4,RTX-4090:2", cpus_per_gpu="1", memory_per_gpu_gb="2",
                    cpu_allocation_ratio="8").start()
    server.add_user("ops", admin=True)
    server.api = server.add_user("dana")
    server.docker = docker_client
    yield server
    server.close()


def exec_(api, key: str, script: str, timeout: float = 120) -> dict:
    response = api.post(f"/instances/{key}/exec", json={"command": ["bash", "-c", script]}, timeout=timeout)
    response.raise_for_status()
    return response.json()


def put_script(api, key: str) -> None:
    encoded = base64.b64encode(SCRIPT.read_bytes()).decode()
    assert exec_(api, key, f"echo {encoded} | base64 -d > /root/train_ddp.py")["exit_code"] == 0


def results(output: str) -> list[dict]:
    """Each rank prints one flat JSON object; two ranks writing at once may share a line."""
    return [json.loads(found) for found in re.findall(r"\{[^{}]*\}", output)]


def run_everywhere(api, keys: list[str], command: str) -> list[dict]:
    """Start `command` in every member at once (torchrun waits for its peers)."""
    outputs: dict[str, dict] = {}

    def one(key):
        outputs[key] = exec_(api, key, command, timeout=150)

    threads = [threading.Thread(target=one, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join(160)
    for key in keys:
        assert outputs[key]["exit_code"] == 0, outputs[key]["output"][-3000:]
    return [outputs[k] for k in keys]


def engine_limits(docker) -> list[str]:
    """memlock unlimited and nofile 1048576 where the engine may raise limits; else its
    own hard limits (soft raised to them), as in a dockerd without CAP_SYS_RESOURCE.
    Only its own probe is removed: other tests' containers on the engine are left alone."""
    from docker.errors import APIError
    from docker.types import Ulimit

    wanted = [Ulimit(name="memlock", soft=-1, hard=-1), Ulimit(name="nofile", soft=1048576, hard=1048576)]
    probe = docker.containers.create("dockyard/debian:bookworm", ["-c", "true"], entrypoint=["/bin/sh"],
                                     ulimits=wanted, network_mode="none")
    try:
        probe.start()
        return ["unlimited", "1048576"]
    except APIError:
        return docker.containers.run("dockyard/debian:bookworm", ["ulimit -H -l; ulimit -H -n"], entrypoint=["/bin/sh", "-c"],
                                     remove=True, network_mode="none").decode().split()
    finally:
        probe.remove(force=True)


def test_one_instance_runs_ddp_out_of_the_box(srv):
    api = srv.api
    created = api.post("/instances", json={"image": IMAGE, "gpu_model": "RTX-4090", "gpu_count": 1,
                                           "name": "single"}).json()
    wait_status(api, created["id"], "running", timeout=90)
    limits = exec_(api, created["id"], "ulimit -l; ulimit -n; df -k --output=size /dev/shm | tail -1; "
                   "echo ${CUDA_VISIBLE_DEVICES-unset} $NCCL_DEBUG $DOCKYARD_GPUS_PER_NODE")["output"].split()
    assert limits[:2] == engine_limits(srv.docker)
    assert int(limits[2]) == 8 * 1024 * 1024  # /dev/shm: 8 GiB, in KiB
    assert limits[3:] == ["unset", "WARN", "1"]  # host GPU indexes would be wrong inside

    put_script(api, created["id"])
    out = exec_(api, created["id"], "torchrun --standalone --nproc_per_node=2 /root/train_ddp.py 2>&1")
    assert out["exit_code"] == 0, out["output"][-3000:]
    ranks = results(out["output"])
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    assert {r["allreduce"] for r in ranks} == {3.0} and len({r["checksum"] for r in ranks}) == 1
    api.delete(f"/instances/{created['id']}").raise_for_status()


def test_two_member_cluster_trains_together_and_acts_as_one(srv):
    api, docker = srv.api, srv.docker
    made = srv.cli("cluster", "create", "--name", "ddp", "--nodes", "2", "--gpus", "1", "--gpu-model", "A100-80GB",
                   "--image", IMAGE, "--wait", "--json", token_of="dana", timeout=180)
    assert made.returncode == 0, made.stderr
    cluster = json.loads(made.stdout)
    assert cluster["status"] == "running" and cluster["network"] == "bridge" and cluster["spans"] == ["local"]
    members = cluster["members"]
    assert [m["name"] for m in members] == ["ddp-0", "ddp-1"]
    assert sorted(g for m in members for g in m["gpus"]) == [0, 1]  # different GPUs, no double booking
    ids = [m["id"] for m in members]

    env = exec_(api, ids[1], "echo $MASTER_ADDR $MASTER_PORT $NNODES $NODE_RANK $NPROC_PER_NODE $WORLD_SIZE "
                "$DOCKYARD_NODE_IPS; hostname; cat /etc/dockyard/hostfile; getent hosts ddp-0 ddp-1")["output"]
    lines = env.splitlines()
    ips = [m["address"] for m in members]
    assert lines[0].split() == ["ddp-0", "29500", "2", "1", "1", "2", ",".join(ips)]
    assert lines[1] == "ddp-1"
    assert lines[2:4] == ["ddp-0 slots=1", "ddp-1 slots=1"]
    assert [line.split() for line in lines[4:6]] == [[ips[0], "ddp-0"], [ips[1], "ddp-1"]]
    # The network is the cluster's alone: an instance of the same user is not on it.
    other = api.post("/instances", json={"image": IMAGE, "gpu_count": 0, "name": "outsider"}).json()
    wait_status(api, other["id"], "running", timeout=90)
    assert exec_(api, other["id"], "getent hosts ddp-0 || echo none")["output"].strip() == "none"
    api.delete(f"/instances/{other['id']}")

    for key in ids:
        put_script(api, key)
    outs = run_everywhere(api, ids, TORCHRUN + " 2>&1")
    ranks = [r for out in outs for r in results(out["output"])]
    assert sorted(r["rank"] for r in ranks) == [0, 1] and {r["world"] for r in ranks} == {2}
    assert {r["allreduce"] for r in ranks} == {3.0}
    assert len({r["checksum"] for r in ranks}) == 1, ranks  # DDP kept the replicas identical
    assert {r["host"] for r in ranks} == {"ddp-0", "ddp-1"}

    # Stop and start act on every member; a member whose GPUs are taken fails the start.
    api.post("/clusters/ddp/stop").raise_for_status()
    stopped = api.get("/clusters/ddp", params={"wait_for": "stopped", "timeout": 60}).json()
    assert [m["status"] for m in stopped["members"]] == ["stopped", "stopped"]
    hog = api.post("/instances", json={"image": IMAGE, "gpu_model": "A100-80GB", "gpu_count": 3}).json()
    refused = api.post("/clusters/ddp/start")
    assert refused.status_code == 409
    assert "member ddp-1 needs 1 A100-80GB GPUs on node local, 0 free" in refused.json()["detail"]
    assert "no member was started" in refused.json()["detail"]
    assert {m["status"] for m in api.get("/clusters/ddp").json()["members"]} == {"stopped"}
    api.delete(f"/instances/{hog['id']}").raise_for_status()
    wait_status(api, hog["id"], "released", timeout=60)
    started = srv.cli("cluster", "start", "ddp", "--wait", "--json", token_of="dana", timeout=120)
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["status"] == "running"
    # Same addresses after a restart: the hostfile and DOCKYARD_NODE_IPS stay true.
    assert exec_(api, ids[0], "getent hosts ddp-1")["output"].split()[0] == ips[1]

    listed = json.loads(srv.cli("cluster", "ls", "--json", token_of="dana", check=True).stdout)
    assert [c["name"] for c in listed] == ["ddp"]
    shown = srv.cli("cluster", "show", "ddp", token_of="dana", check=True).stdout
    assert "ddp-0" in shown and "ddp-1" in shown

    gone = srv.cli("cluster", "rm", "ddp", "--yes", "--wait", "--json", token_of="dana", timeout=120)
    assert gone.returncode == 0, gone.stderr
    assert {m["status"] for m in json.loads(gone.stdout)["members"]} == {"released"}
    label = {"label": f"dockyard.cluster={cluster['id']}"}
    wait_until(lambda: not docker.networks.list(filters=label), "the cluster network is removed")
    # The reconciler marks the cluster released right after removing its network.
    wait_until(lambda: api.get("/clusters/ddp").status_code == 404, "the cluster is released")
    assert api.get("/clusters", params={"all": True}).json()[0]["status"] == "released"


def wait_until(check, what: str, timeout: float = 20) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.5)


def test_a_cluster_that_cannot_be_fully_placed_leaves_nothing(srv):
    api, docker = srv.api, srv.docker
    hog = api.post("/instances", json={"image": IMAGE, "gpu_model": "A100-80GB", "gpu_count": 3,
                                       "name": "hog"}).json()
    before = {i["id"] for i in api.get("/instances", params={"all": True}).json()}
    deployment = {"label": f"dockyard.deployment={srv.deployment}"}
    containers_before = {c.id for c in docker.containers.list(all=True, filters=deployment)}
    refused = api.post("/clusters", json={"name": "big", "nodes": 2, "gpus": 1, "gpu_model": "A100-80GB",
                                          "image": IMAGE})
    assert refused.status_code == 409, refused.text
    detail = refused.json()["detail"]
    assert "room for 1 now, 1 member (1 GPUs) missing" in detail and "local: 1" in detail
    assert {i["id"] for i in api.get("/instances", params={"all": True}).json()} == before
    assert [c["name"] for c in api.get("/clusters").json()] == []
    # Judged against what was there before, so that an earlier test's leftovers do not count.
    assert not [c for c in docker.containers.list(all=True, filters=deployment)
                if c.id not in containers_before and c.labels.get("dockyard.instance") != hog["id"]]
    # The CLI says the same, and fails.
    cli = srv.cli("cluster", "create", "--name", "big", "--nodes", "2", "--gpus", "1", "--gpu-model", "A100-80GB",
                  "--image", IMAGE, token_of="dana")
    assert cli.returncode == 1 and "1 member (1 GPUs) missing" in cli.stderr
    api.delete(f"/instances/{hog['id']}").raise_for_status()
    wait_status(api, hog["id"], "released", timeout=60)


@pytest.mark.parametrize("body, field, words", [
    ({"nodes": 0}, "nodes", "1 to 16"),
    ({"nodes": 17}, "nodes", "1 to 16"),
    ({"nodes": 3, "gpus": 2, "gpu_model": "A100-80GB"}, "nodes", "larger than the pool"),
    ({"nodes": 2, "gpu_model": "A100-80GB,RTX-4090"}, "gpu_model", "one model"),
    ({"nodes": 2, "gpu_model": "V100"}, "gpu_model", "unknown GPU model"),
    ({"nodes": 2, "name": "Bad_Name"}, "name", "not a valid cluster name"),
    ({"nodes": 2, "image": "nope"}, "image", "unknown image"),
])
def test_bad_input_is_refused_and_nothing_placed(srv, body, field, words):
    request = {"name": "bad", "image": IMAGE, "gpus": 1, **body}
    refused = srv.api.post("/clusters", json=request)
    assert refused.status_code == 400, refused.text
    assert refused.json()["field"] == field and words in refused.json()["detail"]
    assert [c["name"] for c in srv.api.get("/clusters").json()] == []
    assert not [i for i in srv.api.get("/instances").json() if i["name"].startswith("bad")]
